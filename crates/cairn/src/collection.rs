//! A bounded source over a fixed list of elements, with its position in
//! operator state (so it is exactly-once across restores).

use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, StreamRecord};
use cairn_state::DistributionMode;

const POSITION_STATE: &str = "collection-position";

/// Emits the given elements once, in order.
#[derive(Clone, Debug)]
pub struct CollectionSource<T> {
    items: std::sync::Arc<Vec<T>>,
    next: u64,
    mine: bool,
}

impl<T> CollectionSource<T> {
    pub fn new(items: Vec<T>) -> Self {
        CollectionSource {
            items: std::sync::Arc::new(items),
            next: 0,
            mine: false,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for CollectionSource<T> {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        // Only subtask 0 emits; the collection is not split.
        self.mine = ctx.info.subtask == 0;
        if let Some(pos) = ctx.state.list::<u64>(POSITION_STATE)?.into_iter().max() {
            // A restored position past the end (the job now has fewer
            // elements) means everything was emitted.
            self.next = pos.min(self.items.len() as u64);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<T>>, max: usize) -> OpResult<SourceStatus> {
        if !self.mine {
            return Ok(SourceStatus::Finished);
        }
        let start = self.next as usize;
        let end = (start + max).min(self.items.len());
        out.extend(self.items[start..end].iter().cloned().map(StreamRecord::new));
        self.next = end as u64;
        Ok(if end == self.items.len() {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        let pos: Vec<u64> = if self.mine { vec![self.next] } else { Vec::new() };
        ctx.state.set_list(POSITION_STATE, DistributionMode::Union, &pos)?;
        Ok(())
    }
}
