//! The MQClient conformance suite.

use std::sync::{Arc, Mutex};

use super::{QUIET_PERIOD, call, eventually, lock, strings};
use crate::spi::{MQClient, MQMessageListener};

/// Records what a subscription received.
#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<(String, String)>>,
}

impl MQMessageListener for Inbox {
    fn on_message(&self, channel: &str, message: &str) {
        lock(&self.received).push((channel.to_string(), message.to_string()));
    }
}

impl Inbox {
    fn messages(&self) -> Vec<String> {
        lock(&self.received)
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn channels(&self) -> Vec<String> {
        lock(&self.received)
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// `Ok` once `message` has arrived.
    fn has(&self, message: &str) -> Result<(), String> {
        let messages = self.messages();
        if messages.iter().any(|m| m == message) {
            Ok(())
        } else {
            Err(format!("received so far: {messages:?}"))
        }
    }
}

/// Checks the [`MQClient`] guarantees between two handles on one backend ("two nodes").
///
/// `a` and `b` may be the same handle, or two connections to one backend. Covers:
/// publishing on a channel nobody subscribed to; a subscriber on `b` receiving a message
/// published on `a` (and the reverse direction) with the right channel name; publish order
/// kept for 100 messages; fan-out to every subscriber of a channel, exactly once each;
/// channel isolation; and `unsubscribe` stopping delivery at once, even for messages
/// already published. Channels are named `<prefix>mq:...`. Deliveries are polled with a
/// deadline of [`DELIVERY_TIMEOUT`].
pub async fn mq_client(a: Arc<dyn MQClient>, b: Arc<dyn MQClient>, prefix: &str) {
    let ch1 = format!("{prefix}mq:ch1");
    let ch2 = format!("{prefix}mq:ch2");
    let nobody = format!("{prefix}mq:nobody");

    call("publish without subscribers", a.publish(&nobody, "lost")).await;

    // Cross-node delivery.
    let first = Arc::new(Inbox::default());
    let first_id = call("subscribe", b.subscribe(&ch1, first.clone())).await;
    call("publish", a.publish(&ch1, "hello")).await;
    eventually(
        "a message published on `a` reaches a subscriber on `b`",
        || first.has("hello"),
    )
    .await;
    assert_eq!(
        first.channels(),
        vec![ch1.clone()],
        "the listener must get the channel name"
    );

    // Order.
    let burst: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for m in &burst {
        call("publish", a.publish(&ch1, m)).await;
    }
    eventually("100 published messages arrive", || first.has("m99")).await;
    let mut expected = vec!["hello".to_string()];
    expected.extend(burst.iter().cloned());
    assert_eq!(
        first.messages(),
        expected,
        "messages from one publisher must arrive in order"
    );

    // Fan-out, both directions.
    let second = Arc::new(Inbox::default());
    let third = Arc::new(Inbox::default());
    let second_id = call("subscribe", a.subscribe(&ch1, second.clone())).await;
    let third_id = call("subscribe", b.subscribe(&ch1, third.clone())).await;
    call("publish", a.publish(&ch1, "fan-out")).await;
    call("publish", b.publish(&ch1, "from-b")).await;
    for (name, inbox) in [("first", &first), ("second", &second), ("third", &third)] {
        eventually(
            &format!("subscriber {name} gets a fanned-out message"),
            || inbox.has("from-b"),
        )
        .await;
    }

    // Channel isolation.
    let other = Arc::new(Inbox::default());
    let other_id = call("subscribe", b.subscribe(&ch2, other.clone())).await;
    call("publish", a.publish(&ch2, "on-ch2")).await;
    eventually("a message on a second channel arrives", || {
        other.has("on-ch2")
    })
    .await;

    // Unsubscribe with messages possibly still queued: nothing may arrive after it returns.
    for i in 0..50 {
        call("publish", a.publish(&ch1, &format!("late{i}"))).await;
    }
    call("unsubscribe", b.unsubscribe(first_id)).await;
    let count_at_unsubscribe = first.messages().len();
    call("publish after unsubscribe", a.publish(&ch1, "after")).await;
    for (name, inbox) in [("second", &second), ("third", &third)] {
        eventually(&format!("subscriber {name} still receives"), || {
            inbox.has("after")
        })
        .await;
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    let first_messages = first.messages();
    assert_eq!(
        first_messages.len(),
        count_at_unsubscribe,
        "after unsubscribe returned the listener must not be called again; it got {:?}",
        &first_messages[count_at_unsubscribe.min(first_messages.len())..]
    );

    // Exactly once on every subscriber, in order per publisher; nothing crossed channels.
    let mut from_a = strings(&["fan-out"]);
    from_a.extend((0..50).map(|i| format!("late{i}")));
    from_a.push("after".to_string());
    for (name, inbox) in [("second", &second), ("third", &third)] {
        let (from_b, got_from_a): (Vec<String>, Vec<String>) =
            inbox.messages().into_iter().partition(|m| m == "from-b");
        assert_eq!(
            got_from_a, from_a,
            "subscriber {name}: each message exactly once, in order"
        );
        assert_eq!(
            from_b.len(),
            1,
            "subscriber {name}: the message from `b` exactly once"
        );
        assert!(
            inbox.channels().iter().all(|c| *c == ch1),
            "subscriber {name} got another channel"
        );
    }
    assert_eq!(
        other.messages(),
        strings(&["on-ch2"]),
        "a subscriber gets only its channel"
    );

    call("unsubscribe", a.unsubscribe(second_id)).await;
    call("unsubscribe", b.unsubscribe(third_id)).await;
    call("unsubscribe", b.unsubscribe(other_id)).await;
    call(
        "publish with no subscribers left",
        a.publish(&ch1, "nobody"),
    )
    .await;
}
