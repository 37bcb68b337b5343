//! Grant filtering of outgoing messages: what of a message a session may see under its
//! current grants. The core applies it when it routes a message; the shell applies it again
//! when it sends one, since a refreshed, narrower token must apply even to what was queued.

use syncline_protocol::messages::{Ack, Plan, Sync};
use syncline_protocol::{DocId, Message};

use crate::auth::Grants;

/// `message` with everything `grants` does not let the session read removed; `None` when
/// nothing of it is left to send.
pub fn visible(message: Message, grants: &Grants) -> Option<Message> {
    let readable = |doc: &DocId| grants.can_read(doc.collection());
    match message {
        Message::Sync(Sync { items, positions }) => {
            let items: Vec<_> = items.into_iter().filter(|i| readable(&i.doc)).collect();
            let positions = positions.map(|p| {
                p.into_iter()
                    .filter(|c| grants.can_read(&c.collection))
                    .collect()
            });
            (!items.is_empty()).then_some(Message::Sync(Sync { items, positions }))
        }
        Message::Ack(Ack { items, positions }) => {
            let items: Vec<_> = items.into_iter().filter(|i| readable(&i.doc)).collect();
            let positions = positions.map(|p| {
                p.into_iter()
                    .filter(|c| grants.can_read(&c.collection))
                    .collect()
            });
            (!items.is_empty()).then_some(Message::Ack(Ack { items, positions }))
        }
        Message::Plan(Plan {
            send,
            deferred,
            cursors,
            update,
            fetch,
            reset,
            id,
        }) => {
            let send: Vec<_> = send.into_iter().filter(|e| readable(&e.doc)).collect();
            let deferred: Vec<_> = deferred.into_iter().filter(|e| readable(&e.doc)).collect();
            // An answer (to a Reconcile or a Fetch) always arrives, and so does a numbered
            // plan (its `PlanDone` names it); an update with nothing left need not.
            (!update || fetch || id.is_some() || !send.is_empty() || !deferred.is_empty()).then(
                || {
                    Message::Plan(Plan {
                        send,
                        deferred,
                        cursors: cursors
                            .into_iter()
                            .filter(|c| grants.can_read(&c.collection))
                            .collect(),
                        update,
                        fetch,
                        reset: reset.into_iter().filter(|c| grants.can_read(c)).collect(),
                        id,
                    })
                },
            )
        }
        Message::Ephemeral(e) => readable(&e.doc).then_some(Message::Ephemeral(e)),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use syncline_protocol::messages::{Ephemeral, Sync, SyncItem};
    use syncline_protocol::{Collection, Message};

    use super::visible;
    use crate::auth::Grants;
    use crate::auth::claims::CollectionSet;

    #[test]
    fn outbound_messages_are_filtered_by_the_current_grants() {
        let todos = Collection::new("todos").expect("valid");
        let grants = Grants {
            read: CollectionSet::Only(BTreeSet::from([todos])),
            write: CollectionSet::Only(BTreeSet::new()),
        };
        let item = |d: &str| SyncItem {
            doc: d.parse().expect("id"),
            message: vec![1],
            priority: None,
        };
        let sync = Message::Sync(Sync {
            items: vec![item("todos/a"), item("secret/b")],
            positions: None,
        });
        let Some(Message::Sync(kept)) = visible(sync, &grants) else {
            panic!("kept")
        };
        assert_eq!(kept.items.len(), 1);
        assert_eq!(kept.items[0].doc.to_string(), "todos/a");
        let only_secret = Message::Sync(Sync {
            items: vec![item("secret/b")],
            positions: None,
        });
        assert_eq!(visible(only_secret, &grants), None);
        let presence = Message::Ephemeral(Ephemeral {
            doc: "secret/b".parse().expect("id"),
            payload: Vec::new().into(),
            from: None,
        });
        assert_eq!(visible(presence, &grants), None);
    }
}
