//! Writing a subtask's operator snapshot into a state file, and reading it
//! back for restore. One file per (operator, subtask); keyed state goes into
//! one section per (state, key group) so a rescaled restore reads only the key
//! groups it owns.
//!
//! Sections: `keyed/<state name>` (key group set) hold
//! [`cairn_state::snapshot_codec`] entries; `keyed-states` holds the states'
//! metadata as JSON; `operator` holds the operator state entries (bincode).

use std::io::Write;
use std::path::Path;

use cairn_snapshot::{StateFileRef, StateFileWriter, Storage};
use cairn_state::operator_state::OperatorStateEntry;
use cairn_state::{StateError, StateMeta};

use crate::operator::OperatorSnapshot;

/// Section holding the keyed states' metadata.
pub const KEYED_STATES_SECTION: &str = "keyed-states";
/// Section holding operator state entries.
pub const OPERATOR_SECTION: &str = "operator";

/// Section name of one keyed state.
pub fn keyed_section(state: &str) -> String {
    format!("keyed/{state}")
}

/// Write `snapshot` to `dir/name`; `None` when there is nothing to write.
pub fn write_snapshot_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    snapshot: OperatorSnapshot,
) -> Result<Option<StateFileRef>, String> {
    if snapshot.keyed.is_none() && snapshot.operator_state.is_empty() {
        return Ok(None);
    }
    let path = dir.join(name);
    let mut w = StateFileWriter::create(storage, &path).map_err(|e| e.to_string())?;
    if let Some(keyed) = snapshot.keyed {
        let mut metas: Vec<StateMeta> = Vec::new();
        keyed
            .for_each_group(&mut |meta, kg, bytes| {
                if !metas.iter().any(|m| m.name == meta.name) {
                    metas.push(meta.clone());
                }
                w.begin_section(&keyed_section(&meta.name), Some(kg))
                    .map_err(|e| StateError::Backend(e.to_string()))?;
                w.write_all(bytes).map_err(|e| StateError::Backend(e.to_string()))
            })
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(&metas).map_err(|e| e.to_string())?;
        w.begin_section(KEYED_STATES_SECTION, None).map_err(|e| e.to_string())?;
        w.write_all(&json).map_err(|e| e.to_string())?;
    }
    if !snapshot.operator_state.is_empty() {
        let bytes = bincode::serialize(&snapshot.operator_state).map_err(|e| e.to_string())?;
        w.begin_section(OPERATOR_SECTION, None).map_err(|e| e.to_string())?;
        w.write_all(&bytes).map_err(|e| e.to_string())?;
    }
    let info = w.finish_durable().map_err(|e| e.to_string())?;
    Ok(Some(info.to_file_ref(name)))
}

/// Decode the operator state entries of a section.
pub fn decode_operator_entries(bytes: &[u8]) -> Result<Vec<OperatorStateEntry>, String> {
    bincode::deserialize(bytes).map_err(|e| format!("operator state section is corrupt: {e}"))
}

/// Decode the keyed states' metadata.
pub fn decode_keyed_states(bytes: &[u8]) -> Result<Vec<StateMeta>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("keyed state list is corrupt: {e}"))
}
