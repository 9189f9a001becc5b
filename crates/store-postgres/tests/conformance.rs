//! Runs the shared `Store` conformance suite against PostgreSQL, one fresh database per case.

use std::sync::Arc;
use tidings_store::Store;
use tidings_store_postgres::testing::TestDatabase;

/// A store on a new database; the guard drops the database after the case.
async fn fresh() -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::create().await;
    (db.store().await, db)
}

tidings_store::store_conformance_tests!(fresh());
