//! Output buffers of typed operators: the main output and side outputs
//! addressed by [`OutputTag`].

use std::any::Any;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use cairn_runtime::operator::Emitter;
use cairn_runtime::record::StreamRecord;

/// Names a side output and its record type.
pub struct OutputTag<T> {
    id: Arc<str>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            id: self.id.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> OutputTag<T> {
    /// A side output named `id` (unique within the operator).
    pub fn new(id: impl Into<String>) -> Self {
        OutputTag {
            id: Arc::from(id.into()),
            _t: PhantomData,
        }
    }

    /// The tag's name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The side-output tags of one operator that have consumers, in port order
/// (tag `i` is port `i + 1`). Filled by the API while the job is built.
pub type SidePorts = Arc<Mutex<Vec<String>>>;

/// Emits a type-erased side-output buffer on a port.
type EmitSide = fn(&mut Box<dyn Any + Send>, usize, &mut Emitter);

/// Typed main output plus type-erased side-output buffers.
pub struct Outputs<O> {
    pub(crate) main: Vec<StreamRecord<O>>,
    side_tags: Vec<String>,
    side: Vec<Option<Box<dyn Any + Send>>>,
    emit_side: Vec<EmitSide>,
    /// Tags already resolved to their port, by their shared name: a function
    /// keeps its tags, so after the first record a pointer compare finds it.
    resolved: Vec<(Arc<str>, Option<usize>)>,
}

/// Tags remembered per operator; a function that makes a new tag per record
/// is looked up by name every time instead of growing the list.
const RESOLVED_TAGS: usize = 16;

fn emit_typed<T: Send + 'static>(buf: &mut Box<dyn Any + Send>, port: usize, out: &mut Emitter) {
    if let Some(v) = buf.downcast_mut::<Vec<StreamRecord<T>>>() {
        out.emit_vec(port, v);
    }
}

impl<O: Send + 'static> Outputs<O> {
    /// Buffers for the given consumed side-output tags.
    pub fn new(side_ports: &SidePorts) -> Self {
        let side_tags = side_ports.lock().map(|v| v.clone()).unwrap_or_default();
        let n = side_tags.len();
        Outputs {
            main: Vec::with_capacity(256),
            side_tags,
            side: (0..n).map(|_| None).collect(),
            emit_side: vec![emit_typed::<()>; n],
            resolved: Vec::new(),
        }
    }

    /// Emit a main-output record.
    #[inline]
    pub fn collect(&mut self, value: O, timestamp: i64) {
        self.main.push(StreamRecord { value, timestamp });
    }

    /// Emit to a side output; dropped when nobody consumes the tag.
    pub fn side<T: Send + 'static>(&mut self, tag: &OutputTag<T>, value: T, timestamp: i64) {
        let port = match self.resolved.iter().find(|(t, _)| Arc::ptr_eq(t, &tag.id)) {
            Some((_, port)) => *port,
            None => {
                let port = self.side_tags.iter().position(|t| **t == *tag.id);
                if self.resolved.len() < RESOLVED_TAGS {
                    self.resolved.push((tag.id.clone(), port));
                }
                port
            }
        };
        let Some(i) = port else {
            return;
        };
        let slot = &mut self.side[i];
        if slot.is_none() {
            *slot = Some(Box::new(Vec::<StreamRecord<T>>::new()));
            self.emit_side[i] = emit_typed::<T>;
        }
        if let Some(v) = slot.as_mut().and_then(|b| b.downcast_mut::<Vec<StreamRecord<T>>>()) {
            v.push(StreamRecord { value, timestamp });
        }
    }

    /// Hand everything buffered to the emitter.
    pub fn flush(&mut self, out: &mut Emitter) {
        out.emit_vec(0, &mut self.main);
        for (i, slot) in self.side.iter_mut().enumerate() {
            if let Some(b) = slot {
                (self.emit_side[i])(b, i + 1, out);
            }
        }
    }
}
