//! Atomic file writes (temporary file + rename), as used by every run-directory file.

use sclstm_model::checkpoint::write_atomic;

#[test]
fn replaces_content_and_leaves_no_temp_file() {
    let dir = std::env::temp_dir().join(format!("sclstm-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.json");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_folder_is_an_error_not_a_panic() {
    let path = std::path::Path::new("/proc/sclstm-no-such-dir/x.json");
    assert!(write_atomic(path, b"x").is_err());
}
