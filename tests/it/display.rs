//! `dm-patch display`: TiUP's table with live status and version.

use crate::support::{META_V2, Store};

/// A cluster where nothing answers: every row reads Down, and the table is stable.
#[test]
fn table_of_an_unreachable_cluster() {
    let run = Store::demo().run(["display", "demo", "--ssh-timeout", "1"]).success();
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn json_and_filters() {
    let store = Store::new().cluster("old", META_V2);
    let run = store.run(["display", "old", "-R", "dm-worker", "--format", "json"]).success();
    insta::assert_snapshot!(run.stdout);
}
