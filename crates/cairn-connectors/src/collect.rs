//! A sink that collects records in memory, for tests and small jobs.

use std::sync::{Arc, Mutex};

use cairn_operators::Sink;
use cairn_runtime::{OpResult, StreamRecord};

/// Handle to the records a [`CollectSink`] gathered (from all subtasks).
#[derive(Clone, Debug)]
pub struct Collected<T> {
    inner: Arc<Mutex<Vec<StreamRecord<T>>>>,
}

impl<T: Clone> Collected<T> {
    /// The collected values, in arrival order.
    pub fn values(&self) -> Vec<T> {
        self.inner
            .lock()
            .map(|v| v.iter().map(|r| r.value.clone()).collect())
            .unwrap_or_default()
    }

    /// The collected records with timestamps.
    pub fn records(&self) -> Vec<StreamRecord<T>> {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Collects every record into a shared vector.
#[derive(Clone, Debug)]
pub struct CollectSink<T> {
    inner: Arc<Mutex<Vec<StreamRecord<T>>>>,
}

impl<T> CollectSink<T> {
    /// A sink and the handle to read what it collected.
    pub fn new() -> (Self, Collected<T>) {
        let inner = Arc::new(Mutex::new(Vec::new()));
        (CollectSink { inner: inner.clone() }, Collected { inner })
    }
}

impl<T: Clone + Send + 'static> Sink<T> for CollectSink<T> {
    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        self.inner.lock().map_err(|_| "collect sink poisoned")?.extend(batch);
        Ok(())
    }
}
