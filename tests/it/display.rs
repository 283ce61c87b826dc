//! `dm-patch display`: TiUP's table with live status and version.

use crate::support::{META_V2, META_V3, Store};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A cluster where nothing answers: every row reads Down, and the table is stable.
#[test]
fn table_of_an_unreachable_cluster() {
    let store = Store::new().cluster("demo", META_V3);
    let output = store
        .dm_patch(["display", "demo", "--ssh-timeout", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    insta::assert_snapshot!(stdout(&output));
}

#[test]
fn json_and_filters() {
    let store = Store::new().cluster("old", META_V2);
    let output = store
        .dm_patch(["display", "old", "-R", "dm-worker", "--format", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    insta::assert_snapshot!(stdout(&output));
}
