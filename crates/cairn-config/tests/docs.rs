//! Keeps docs/configuration.md in step with the declared options.

use cairn_config::options;

#[test]
fn every_key_and_alias_is_documented_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    for opt in options::all() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", opt.key())))
            .unwrap_or_else(|| panic!("no table row for {}", opt.key()));
        for alias in opt.aliases() {
            assert!(
                row.contains(&format!("`{alias}`")),
                "row of {} lacks alias {alias}",
                opt.key()
            );
        }
        if let Some(default) = opt.default_text() {
            assert!(
                row.contains(&format!("`{default}`")),
                "row of {} lacks default {default}",
                opt.key()
            );
        }
    }
}
