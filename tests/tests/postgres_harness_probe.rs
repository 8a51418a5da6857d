mod support;
#[test]
fn starts() {
    let dir = support::TempDir::new("pgprobe");
    let Some(pg) = support::postgres::Postgres::start(&dir) else {
        return;
    };
    assert_eq!(pg.query("SELECT 40 + 2"), "42");
}
