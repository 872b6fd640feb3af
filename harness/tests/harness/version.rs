//! Versions: the workstation learns which tether the manager is (for `tether version`).

use tether_harness::patiently;

use crate::support::{Result, World};

#[tokio::test]
async fn the_workstation_learns_the_managers_version() -> Result {
    let world = World::start().await?;
    let session = world.alice.session()?;
    let mut version = session.manager_version_rx.clone();
    let said = patiently("the manager's version", version.wait_for(|v| v.is_some()))
        .await?
        .map(|v| v.clone())
        .expect("the session is up");
    assert_eq!(said.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    Ok(())
}
