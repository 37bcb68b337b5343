//! `PlanDone` (negotiated in `Hello`): a session that asked for it gets every plan numbered
//! and closed after the first message of every document the plan sends; one that did not (an
//! older client) gets plans as before.

mod common;

use common::*;
use syncline_protocol::Message;
use syncline_protocol::messages::PlanDone;
use syncline_relay::session::Action;

/// The messages session `id` received, by name, with the number of each plan and `PlanDone`.
fn heard(world: &World, id: u64) -> Vec<String> {
    world.clients[&id]
        .inbox
        .iter()
        .map(|m| match m {
            Message::Plan(p) => format!("plan {:?} send {}", p.id, p.send.len()),
            Message::PlanDone(PlanDone { plan }) => format!("done {plan}"),
            other => other.name().to_owned(),
        })
        .collect()
}

#[test]
fn every_plan_is_numbered_and_closed_after_its_documents() {
    let mut world = World::new();
    let g = || grants(&["todos"], &["todos"]);
    world.join(1, "acme", g());
    let docs: Vec<_> = (0..300).map(|i| doc(&format!("todos/d{i}"))).collect();
    for d in &docs {
        world.clients.get_mut(&1).expect("client").put(d, "x", 1);
    }
    world.push(1, &docs);

    // A device that asked for PlanDone, and one that did not.
    world.join(2, "acme", g());
    world.run(vec![(2, Action::ClosePlans), (2, reconcile(Vec::new()))]);
    world.join(3, "acme", g());
    world.run(vec![(3, reconcile(Vec::new()))]);

    let two = heard(&world, 2);
    let plan = two.iter().position(|m| m == "plan Some(1) send 300");
    let done = two.iter().position(|m| m == "done 1");
    let (Some(plan), Some(done)) = (plan, done) else {
        panic!("{two:?}")
    };
    // 300 documents go in two Sync frames, both between the plan and its end.
    let syncs_between = two[plan..done].iter().filter(|m| *m == "sync").count();
    assert!(syncs_between >= 2, "{two:?}");
    assert_eq!(world.clients[&2].docs.len(), 300);

    let three = heard(&world, 3);
    assert!(
        three.contains(&"plan None send 300".to_owned()),
        "{three:?}"
    );
    assert!(!three.iter().any(|m| m.starts_with("done")), "{three:?}");

    // The next plan (an empty one) is numbered 2 and closed too.
    world.run(vec![(2, reconcile(Vec::new()))]);
    let two = heard(&world, 2);
    let last: Vec<&String> = two.iter().rev().take(2).collect();
    assert_eq!(last, vec!["done 2", "plan Some(2) send 0"], "{two:?}");
}
