//! Every metric the server records, by name, through the `metrics` facade.
//!
//! The server never installs a recorder by itself unless the admin HTTP endpoint is enabled
//! (`mp.net.admin-http-port`): then the first server of the process installs the Prometheus
//! recorder (if the application has not installed one of its own) and `/metrics` renders it.
//! An application that installs its own recorder before starting the server gets every metric
//! below through it instead. Labels are static strings, so recording formats nothing: a
//! counter is a key lookup and an atomic add in the recorder.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `mpush_connections` | gauge | `transport` = `tcp`\|`ws` | open client connections |
//! | `mpush_handshakes_total` | counter | `outcome` = `ok`\|`error` | handshakes answered |
//! | `mpush_fast_connects_total` | counter | `outcome` = `ok`\|`error` | fast connects answered |
//! | `mpush_binds_total` | counter | `outcome` = `ok`\|`error` | binds answered |
//! | `mpush_unbinds_total` | counter | `outcome` = `ok`\|`error` | unbinds answered |
//! | `mpush_kicks_total` | counter | `where` = `local`\|`remote` | KICK sent to a device of this server; kicks published on a server's cluster kick channel |
//! | `mpush_pushes_total` | counter | `outcome` = `success`\|`offline`\|`failure`\|`timeout`\|`router_change`, `ack` = `none`\|`auto`\|`biz` | unicast pushes by result (gateway, admin API, embedded API) |
//! | `mpush_ack_latency_seconds` | histogram | `ack` = `auto`\|`biz` | push written → client ACK |
//! | `mpush_gateway_in_flight` | gauge | | GATEWAY_PUSH requests running |
//! | `mpush_flow_control_waits_total` | counter | | sends that waited for a flow-control window |
//! | `mpush_broadcast_tasks_total` | counter | | broadcasts started on this server |
//! | `mpush_broadcast_deliveries_total` | counter | | broadcast pushes written to a connection |
//! | `mpush_backend_calls_total` | counter | `spi` = `cache`\|`mq`, `op`, `result` = `ok`\|`error` | backend calls |
//! | `mpush_backend_call_seconds` | histogram | `spi`, `op` | backend call latency |
//! | `mpush_rsa_queue` | gauge | | handshakes waiting for or running an RSA decryption |
//! | `mpush_outbound_buffer_bytes` | gauge | | bytes queued for clients, all connections |
//! | `mpush_connections_over_high_water` | gauge | | connections above the high water mark |
//! | `mpush_connections_parked` | gauge | | idle TCP connections held by the parker, not by a task |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};

/// Open client connections (`transport`).
pub const CONNECTIONS: &str = "mpush_connections";
/// Handshakes answered (`outcome`).
pub const HANDSHAKES: &str = "mpush_handshakes_total";
/// Fast connects answered (`outcome`).
pub const FAST_CONNECTS: &str = "mpush_fast_connects_total";
/// Binds answered (`outcome`).
pub const BINDS: &str = "mpush_binds_total";
/// Unbinds answered (`outcome`).
pub const UNBINDS: &str = "mpush_unbinds_total";
/// Kicks (`where`).
pub const KICKS: &str = "mpush_kicks_total";
/// Unicast pushes (`outcome`, `ack`).
pub const PUSHES: &str = "mpush_pushes_total";
/// Push written → ACK, seconds (`ack`).
pub const ACK_LATENCY: &str = "mpush_ack_latency_seconds";
/// GATEWAY_PUSH requests running.
pub const GATEWAY_IN_FLIGHT: &str = "mpush_gateway_in_flight";
/// Sends that waited for a flow-control window.
pub const FLOW_CONTROL_WAITS: &str = "mpush_flow_control_waits_total";
/// Broadcasts started.
pub const BROADCAST_TASKS: &str = "mpush_broadcast_tasks_total";
/// Broadcast pushes written.
pub const BROADCAST_DELIVERIES: &str = "mpush_broadcast_deliveries_total";
/// Backend calls (`spi`, `op`, `result`).
pub const BACKEND_CALLS: &str = "mpush_backend_calls_total";
/// Backend call latency, seconds (`spi`, `op`).
pub const BACKEND_LATENCY: &str = "mpush_backend_call_seconds";
/// Handshakes queued for or running RSA.
pub const RSA_QUEUE: &str = "mpush_rsa_queue";
/// Bytes queued for clients.
pub const OUTBOUND_BYTES: &str = "mpush_outbound_buffer_bytes";
/// Connections above the high water mark.
pub const OVER_HIGH_WATER: &str = "mpush_connections_over_high_water";
/// Idle TCP connections held by the server's parker (`server::park`); counted in
/// [`CONNECTIONS`] too.
pub const CONN_PARKED: &str = "mpush_connections_parked";

/// Histogram buckets (seconds) the Prometheus recorder uses for the two latency histograms:
/// 100 µs to 10 s, covering a loopback cache call up to a slow device's ACK.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Set once the server's own Prometheus recorder is the global recorder (see
/// `server::admin_http`). The global recorder cannot change after that, so a handle taken
/// from it stays valid: each [`Metric`] then registers once and afterwards records with one
/// atomic update, not a registry lookup (a shared lock, key comparison and `Arc` clone per
/// call, measurable on the push path). With any other recorder (the application's own, or
/// none yet) every call registers, as the facade intends, so nothing is cached from a
/// recorder that may still be replaced.
static OWN_RECORDER: AtomicBool = AtomicBool::new(false);

/// Marks the server's own recorder as installed (called right after a successful
/// `metrics::set_global_recorder`).
pub(crate) fn own_recorder_installed() {
    OWN_RECORDER.store(true, Ordering::Release);
}

/// A metric's static key and, once the server's own recorder is installed, its handle.
pub(crate) struct Metric {
    key: Key,
    counter: OnceLock<Counter>,
    gauge: OnceLock<Gauge>,
    histogram: OnceLock<Histogram>,
}

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metric").field(&self.key).finish()
    }
}

impl Metric {
    /// A metric with this key (no handle yet).
    pub(crate) const fn new(key: Key) -> Self {
        Self {
            key,
            counter: OnceLock::new(),
            gauge: OnceLock::new(),
            histogram: OnceLock::new(),
        }
    }

    fn cached() -> bool {
        OWN_RECORDER.load(Ordering::Acquire)
    }
}

/// Declares `static` metric keys with static labels: recording one is a map lookup in the
/// recorder and an atomic update, with no allocation.
macro_rules! keys {
    ($($id:ident = $name:expr $(, $k:literal => $v:literal)*;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`", $(" ", $k, "=", $v,)*)]
        pub(crate) static $id: Metric = {
            static LABELS: [Label; { const K: &[&str] = &[$($k),*]; K.len() }] = [$(Label::from_static_parts($k, $v)),*];
            Metric::new(Key::from_static_parts($name, &LABELS))
        };
    )*};
}

keys! {
    CONN_TCP = CONNECTIONS, "transport" => "tcp";
    CONN_WS = CONNECTIONS, "transport" => "ws";
    HANDSHAKE_OK = HANDSHAKES, "outcome" => "ok";
    HANDSHAKE_ERROR = HANDSHAKES, "outcome" => "error";
    FAST_CONNECT_OK = FAST_CONNECTS, "outcome" => "ok";
    FAST_CONNECT_ERROR = FAST_CONNECTS, "outcome" => "error";
    BIND_OK = BINDS, "outcome" => "ok";
    BIND_ERROR = BINDS, "outcome" => "error";
    UNBIND_OK = UNBINDS, "outcome" => "ok";
    UNBIND_ERROR = UNBINDS, "outcome" => "error";
    KICK_LOCAL = KICKS, "where" => "local";
    KICK_REMOTE = KICKS, "where" => "remote";
    ACK_LATENCY_AUTO = ACK_LATENCY, "ack" => "auto";
    ACK_LATENCY_BIZ = ACK_LATENCY, "ack" => "biz";
    GATEWAY_IN_FLIGHT_KEY = GATEWAY_IN_FLIGHT;
    FLOW_WAITS = FLOW_CONTROL_WAITS;
    BROADCAST_TASKS_KEY = BROADCAST_TASKS;
    BROADCAST_DELIVERIES_KEY = BROADCAST_DELIVERIES;
    RSA_QUEUE_KEY = RSA_QUEUE;
    OUTBOUND_BYTES_KEY = OUTBOUND_BYTES;
    OVER_HIGH_WATER_KEY = OVER_HIGH_WATER;
    CONN_PARKED_KEY = CONN_PARKED;
}

/// `mpush_pushes_total` keys: `[ack none, auto, biz][outcome]`, outcome in the order of
/// [`PUSH_OUTCOMES`].
pub(crate) static PUSH_KEYS: [[Metric; 5]; 3] = {
    macro_rules! row {
        ($ack:literal) => {{
            static L: [[Label; 2]; 5] = [
                [
                    Label::from_static_parts("outcome", "success"),
                    Label::from_static_parts("ack", $ack),
                ],
                [
                    Label::from_static_parts("outcome", "offline"),
                    Label::from_static_parts("ack", $ack),
                ],
                [
                    Label::from_static_parts("outcome", "failure"),
                    Label::from_static_parts("ack", $ack),
                ],
                [
                    Label::from_static_parts("outcome", "timeout"),
                    Label::from_static_parts("ack", $ack),
                ],
                [
                    Label::from_static_parts("outcome", "router_change"),
                    Label::from_static_parts("ack", $ack),
                ],
            ];
            [
                Metric::new(Key::from_static_parts(PUSHES, &L[0])),
                Metric::new(Key::from_static_parts(PUSHES, &L[1])),
                Metric::new(Key::from_static_parts(PUSHES, &L[2])),
                Metric::new(Key::from_static_parts(PUSHES, &L[3])),
                Metric::new(Key::from_static_parts(PUSHES, &L[4])),
            ]
        }};
    }
    [row!("none"), row!("auto"), row!("biz")]
};

/// The `outcome` label values of `mpush_pushes_total`, in `PUSH_KEYS` order.
pub const PUSH_OUTCOMES: [&str; 5] = ["success", "offline", "failure", "timeout", "router_change"];

/// Adds one to a counter.
pub(crate) fn incr(m: &'static Metric) {
    if Metric::cached() {
        m.counter
            .get_or_init(|| ::metrics::with_recorder(|r| r.register_counter(&m.key, &META)))
            .increment(1);
    } else {
        ::metrics::with_recorder(|r| r.register_counter(&m.key, &META).increment(1));
    }
}

/// Moves a gauge by `delta`.
pub(crate) fn gauge_add(m: &'static Metric, delta: f64) {
    if Metric::cached() {
        m.gauge
            .get_or_init(|| ::metrics::with_recorder(|r| r.register_gauge(&m.key, &META)))
            .increment(delta);
    } else {
        ::metrics::with_recorder(|r| r.register_gauge(&m.key, &META).increment(delta));
    }
}

/// Records `d` (as seconds) in a histogram.
pub(crate) fn observe(m: &'static Metric, d: Duration) {
    if Metric::cached() {
        m.histogram
            .get_or_init(|| ::metrics::with_recorder(|r| r.register_histogram(&m.key, &META)))
            .record(d.as_secs_f64());
    } else {
        ::metrics::with_recorder(|r| {
            r.register_histogram(&m.key, &META).record(d.as_secs_f64());
        });
    }
}

/// Holds one unit of a gauge for as long as it lives (open connections, queued handshakes).
#[derive(Debug)]
pub(crate) struct GaugeGuard(&'static Metric);

impl GaugeGuard {
    /// Adds one to the gauge until the guard drops.
    pub(crate) fn new(key: &'static Metric) -> Self {
        gauge_add(key, 1.0);
        Self(key)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        gauge_add(self.0, -1.0);
    }
}
