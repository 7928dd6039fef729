//! The CRD files users apply must be exactly what `vigil crd` prints.

use std::path::Path;

fn assert_matches_generated(relative: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = vigil::api::crd_yaml().expect("the CRD renders");
    assert!(
        on_disk == generated,
        "{relative} differs from `vigil crd`; regenerate it with `make crds`"
    );
}

#[test]
fn crds_dir_matches_generated() {
    assert_matches_generated("crds/redisreplications.redis.vigil.dev.yaml");
}

#[test]
fn chart_copy_matches_generated() {
    assert_matches_generated("charts/vigil/crd/redisreplications.redis.vigil.dev.yaml");
}
