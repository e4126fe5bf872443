//! Every stable error code is documented in docs/errors.md, and the codes
//! errors return are among the listed ones.

use cairn::config::ConfigErrorKind;
use cairn::runtime::error::JOB_ERROR_CODES;
use cairn::snapshot::SnapshotError;

#[test]
fn every_code_is_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
    let doc = std::fs::read_to_string(path).expect("docs/errors.md exists");
    let all = JOB_ERROR_CODES
        .iter()
        .chain(SnapshotError::CODES)
        .chain(ConfigErrorKind::CODES)
        .chain(&["INVALID_JOB"]);
    for code in all {
        assert!(
            doc.lines().any(|l| l.starts_with(&format!("| `{code}` |"))),
            "docs/errors.md has no row for {code}"
        );
    }
}

#[test]
fn errors_return_listed_codes() {
    let io = |kind| SnapshotError::io("write", "/x", std::io::Error::from(kind));
    let samples = [
        io(std::io::ErrorKind::StorageFull),
        io(std::io::ErrorKind::ReadOnlyFilesystem),
        io(std::io::ErrorKind::Other),
        SnapshotError::MissingFile { path: "/x".into() },
    ];
    for e in &samples {
        assert!(SnapshotError::CODES.contains(&e.code()), "{}", e.code());
    }
    assert_eq!(samples[0].code(), "STORAGE_FULL");
    assert_eq!(samples[1].code(), "STORAGE_READ_ONLY");
    let err = cairn::config::Configuration::new().set("nope", "1").unwrap_err();
    assert_eq!(err.code(), "CONFIG_UNKNOWN_KEY");
    assert!(ConfigErrorKind::CODES.contains(&err.code()));
}
