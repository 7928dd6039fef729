//! The CRD files users apply must be exactly what `vigil crd` prints.

use std::path::Path;

fn assert_matches_generated(dir: &str) {
    for crd in vigil::api::crds() {
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        let relative = format!("{dir}/{name}.yaml");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&relative);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let generated = vigil::api::crd_yaml_of(crd).expect("the CRD renders");
        assert!(
            on_disk == generated,
            "{relative} differs from `vigil crd`; regenerate it with `make crds`"
        );
    }
}

#[test]
fn crds_dir_matches_generated() {
    assert_matches_generated("crds");
}

#[test]
fn chart_copy_matches_generated() {
    assert_matches_generated("charts/vigil/crd");
}
