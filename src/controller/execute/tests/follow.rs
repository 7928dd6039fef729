//! A set that follows an external master (`spec.replicaOf`): a replaced designated master is
//! recorded before it is touched (rule 5), authenticates with the source's password and follows
//! the source before it is labelled (rule 6), and nobody is promoted.

use super::*;

#[tokio::test]
async fn a_new_designated_master_is_recorded_then_follows_the_source_before_its_label() {
    let source = Address::new("10.9.0.5", 6379);
    let (rr, mut input, fakes) = crashed_master();
    input.following = Some(plan::Source::At(source.clone()));
    let run = execute_plan_with(&rr, &input, fakes, false, Some("src-pw")).await;
    run.result.expect("the designated master is replaced");
    let sent = &run.timeline;
    assert!(
        !sent.iter().any(|e| e.contains("REPLICAOF NO ONE")),
        "a following set promotes nobody: {sent:#?}"
    );
    let unlabelled = position(sent, "label cache-0 role=none");
    let intent = position(sent, "status master=cache-1 epoch=5 target=-");
    let auth = position(sent, "cache-1: CONFIG SET masterauth src-pw");
    let follows = position(sent, "cache-1: REPLICAOF 10.9.0.5 6379");
    let labelled = position(sent, "label cache-1 role=master");
    let rewired = position(sent, "cache-2: REPLICAOF 10.244.0.11 6379");
    assert!(
        unlabelled < intent && intent < auth && auth < follows && follows < labelled,
        "{sent:#?}"
    );
    assert!(labelled < rewired, "{sent:#?}");
    assert_eq!(run.instances.fake("cache-1").following, Some(source));
    assert_eq!(run.instances.fake("cache-2").following, Some(addr(1)));
    assert!(
        run.notes
            .iter()
            .any(|n| n.starts_with("FollowingSource: cache-1 (designated master) follows")),
        "{:#?}",
        run.notes
    );
}
