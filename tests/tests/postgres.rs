//! The host on PostgreSQL: the same jobs, actions and notifications as on SQLite, on a real
//! server the tests start.

use provision_tests::{Deployment, complete};

#[test]
fn the_quickstart_runs_on_postgres_as_on_sqlite() {
    let on_sqlite = Deployment::quickstart();
    let on_postgres = Deployment::quickstart().on_postgres();
    let mut reports = Vec::new();
    for deployment in [&on_sqlite, &on_postgres] {
        let mut host = deployment.host();
        deployment.import(&mut host, "data.toml", false);
        let report = complete(&mut host);
        let states: Vec<_> = host.store.count_by_state().unwrap();
        reports.push((report.counters.clone(), states));
    }
    assert_eq!(reports[0], reports[1]);
}
