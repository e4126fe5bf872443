//! The heap backend against every conformance property.

use cairn_state::HeapKeyedStateBackend;

cairn_state_conformance::backend_conformance_tests!(
    |range| Box::new(HeapKeyedStateBackend::new(range)) as Box<dyn cairn_state::KeyedStateBackend>
);
