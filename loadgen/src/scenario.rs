//! Scenario files: the YAML schema of a chat-shaped workload, its checks and overrides.
//!
//! A scenario is read in three steps, each with errors that name the file, line, column and
//! field (`scenarios/x.yaml:12:3: load.rate: expected a positive number`):
//! 1. YAML to a tree, with `--set path=value` overrides applied to the tree;
//! 2. the tree to [`Scenario`] (unknown keys and wrong types are rejected by serde, the field
//!    path comes from `serde_path_to_error`);
//! 3. semantic checks across fields ([`Scenario::validate`]): weights that are all zero, a
//!    warm-up longer than the run, a rate schedule that makes no sense.
//!
//! The schema is documented field by field in `scenarios/README.md`; keep the two in step.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml_ng::Value;

/// The chat operations the cluster offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    CreateUser,
    CreateChat,
    JoinChat,
    SendMessage,
    GetMessages,
    GetChatUsers,
    /// `Login` (with `security: {auth: true}`): a user logs in again, or a user the load
    /// created logs in for the first time.
    Login,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::CreateUser => "create_user",
            Op::CreateChat => "create_chat",
            Op::JoinChat => "join_chat",
            Op::SendMessage => "send_message",
            Op::GetMessages => "get_messages",
            Op::GetChatUsers => "get_chat_users",
            Op::Login => "login",
        }
    }
}

/// A duration written like `30s`, `250ms` or `1m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 30s or 250ms")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                Dur::parse(s)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Dur::from_number(v)
            }
        }
        d.deserialize_any(V)
    }
}

impl Dur {
    fn parse<E: serde::de::Error>(s: &str) -> Result<Dur, E> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|_| E::custom(format!("expected a duration like 30s or 250ms, got '{s}'")))
    }

    /// A bare number is a duration only when it is 0.
    fn from_number<E: serde::de::Error>(v: u64) -> Result<Dur, E> {
        if v == 0 {
            Ok(Dur(Duration::ZERO))
        } else {
            Err(E::custom(format!(
                "expected a duration with a unit like {v}s or {v}ms"
            )))
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A number that must be greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
pub struct Positive(pub f64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Positive;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive number")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Positive, E> {
                if v > 0.0 && v.is_finite() {
                    Ok(Positive(v))
                } else {
                    Err(E::custom("expected a positive number"))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Positive, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Positive, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Positive, E> {
                Err(E::custom("expected a positive number"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A share written as a percentage, like `0.1%` (held as the number of percent, `0.1`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "expected a percentage from 0% to 100%, like 0.1%";
        impl serde::de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage like 0.1%")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Percent, E> {
                let n = s.trim().strip_suffix('%').map(|n| n.trim().parse::<f64>());
                match n {
                    Some(Ok(v)) if (0.0..=100.0).contains(&v) => Ok(Percent(v)),
                    _ => Err(E::custom(format!("{EXPECTED}, got '{s}'"))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Percent, E> {
                Err(E::custom(format!("{EXPECTED} (with the % sign), got {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Percent, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Percent, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}%", self.0))
    }
}

/// A number that must not be negative.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
pub struct NonNegative(pub f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NonNegative;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of 0 or more")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NonNegative, E> {
                if v >= 0.0 && v.is_finite() {
                    Ok(NonNegative(v))
                } else {
                    Err(E::custom("expected a number of 0 or more"))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NonNegative, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NonNegative, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<NonNegative, E> {
                Err(E::custom("expected a number of 0 or more"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The system under test: `telegraft` (the default) or `etcd` (`scenarios/etcd.md`).
    #[serde(default, skip_serializing_if = "System::is_telegraft")]
    pub system: System,
    /// Where a run starts the replicas: `local` processes on loopback (the default) or
    /// `docker` containers on a private network (`loadgen bench --deploy docker`).
    #[serde(default, skip_serializing_if = "Deploy::is_local")]
    pub deploy: Deploy,
    /// CPU limits of the containers, with `deploy: docker`.
    #[serde(default, skip_serializing_if = "Resources::is_default")]
    pub resources: Resources,
    /// TLS and chat authentication on the cluster a run starts (`cluster/README.md`,
    /// "Security"); both off by default, the bare cluster.
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
    /// Replica count; `--replicas` overrides it.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub seed: u64,
    pub dataset: Dataset,
    pub load: Load,
    /// Relative weights of each operation.
    pub mix: BTreeMap<Op, u32>,
    #[serde(default)]
    pub message_size: MessageSize,
    #[serde(default)]
    pub reads: Reads,
    #[serde(default)]
    pub routing: Routing,
    /// Objectives per operation, and for the run as a whole; a run that misses one exits 3.
    #[serde(default, skip_serializing_if = "Slos::is_empty")]
    pub slo: Slos,
    /// `off` skips the history check (for targets that are not Telegraft clusters).
    #[serde(default, skip_serializing_if = "Switch::is_on")]
    pub check: Switch,
    /// `off` starts a local cluster's replicas without their metrics endpoint and samples no
    /// metrics (the processes' CPU, memory and disk still are): the baseline for measuring
    /// what metrics cost.
    #[serde(default, skip_serializing_if = "Switch::is_on")]
    pub metrics: Switch,
    /// Settings passed to the replicas a run starts (`telegraft node` flags), for
    /// experiments over cluster settings; ignored with `--target`.
    #[serde(default, skip_serializing_if = "ClusterSettings::is_default")]
    pub cluster: ClusterSettings,
    /// Faults injected during the load (local clusters only).
    #[serde(default)]
    pub faults: Vec<Fault>,
}

fn default_replicas() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub users: u32,
    pub chats: u32,
    pub members_per_chat: u32,
    /// Which chat a call picks (a send's chat, a `get_chat_users`, a join's chat).
    #[serde(default)]
    pub chat_popularity: Popularity,
    /// Which user acts (a send's sender among the chat's members, a chat's creator, a
    /// joining user, which of its users a poller polls for).
    #[serde(default)]
    pub user_activity: Popularity,
}

/// How often each of `n` chats (or users) is picked: all alike, or by a Zipf law over their
/// rank in the dataset (the first is the most popular, the `k`th is picked in proportion to
/// `1 / k^S`). Real chat traffic is skewed like this: a few hot chats and a few very active
/// users carry most of it, and contend for the same rows, locks and caches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Popularity {
    #[default]
    Uniform,
    /// The Zipf exponent `S` (> 0; about 1 for chat traffic, larger for more skew).
    Zipf(f64),
}

const POPULARITY: &str = "expected uniform or {zipf: S} with S > 0, like {zipf: 1.1}";

impl<'de> Deserialize<'de> for Popularity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Popularity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("uniform or {zipf: S}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Popularity, E> {
                match s.trim() {
                    "uniform" => Ok(Popularity::Uniform),
                    _ => Err(E::custom(format!("{POPULARITY}, got '{s}'"))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Popularity, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::custom(POPULARITY));
                };
                if key != "zipf" {
                    // Failed inside the value, so the error's path names the key.
                    let refused = format!("unknown field `{key}`, expected `zipf`");
                    return Err(map.next_value_seed(Refuse(refused)).expect_err("refused"));
                }
                let s: Positive = map.next_value()?;
                if let Some(key) = map.next_key::<String>()? {
                    let refused = format!("unknown field `{key}`: {POPULARITY}");
                    return Err(map.next_value_seed(Refuse(refused)).expect_err("refused"));
                }
                Ok(Popularity::Zipf(s.0))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Popularity, E> {
                Err(E::custom(format!("{POPULARITY}, got {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Popularity, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Popularity, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Popularity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Popularity::Uniform => s.serialize_str("uniform"),
            Popularity::Zipf(exponent) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("zipf", exponent)?;
                map.end()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A fixed arrival rate: requests are scheduled whether or not earlier ones finished.
    Open,
    /// A fixed number of users, each waiting for its reply and then `think_time`.
    Closed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub model: Model,
    /// Operations per second in total (open model), for the whole measured window.
    #[serde(default)]
    pub rate: Option<Positive>,
    /// A rising schedule instead of one rate (open model): each step runs `rate` for `for`.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// How the open model's arrivals are spaced at that rate.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Concurrent Goose users.
    pub users: u32,
    /// Closed model: the pause after each reply.
    #[serde(default)]
    pub think_time: ThinkTime,
    #[serde(default)]
    pub warmup: Dur,
    /// Measured duration (excluding warm-up). With `steps`, the sum of the steps.
    #[serde(default)]
    pub duration: Option<Dur>,
    /// How long one call may take before it counts as a `Timeout` error.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub rate: Positive,
    #[serde(rename = "for")]
    pub duration: Dur,
}

/// How the open model's arrivals are spaced at the scheduled rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly: one every `1 / rate` seconds.
    #[default]
    Uniform,
    /// A Poisson process: independent, exponentially distributed gaps with mean
    /// `1 / rate`, seeded. Bursts come and go as they do from many independent clients.
    Poisson,
}

/// The closed model's think time: a plain duration (fixed), or `{dist, mean}`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThinkTime {
    pub dist: ThinkDist,
    pub mean: Dur,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkDist {
    /// Exactly `mean` every time.
    #[default]
    Fixed,
    /// Uniform on `[0, 2 * mean]`.
    Uniform,
    /// Exponential with that mean (memoryless, like people's pauses).
    Exponential,
}

impl ThinkDist {
    pub fn name(self) -> &'static str {
        match self {
            ThinkDist::Fixed => "fixed",
            ThinkDist::Uniform => "uniform",
            ThinkDist::Exponential => "exponential",
        }
    }
}

/// The map form of [`ThinkTime`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThinkTimeMap {
    dist: ThinkDist,
    mean: Dur,
}

impl<'de> Deserialize<'de> for ThinkTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ThinkTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration like 100ms, or {dist: fixed|uniform|exponential, mean: 100ms}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ThinkTime, E> {
                Dur::parse(s).map(|mean| ThinkTime {
                    dist: ThinkDist::Fixed,
                    mean,
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ThinkTime, E> {
                Dur::from_number(v).map(|mean| ThinkTime {
                    dist: ThinkDist::Fixed,
                    mean,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ThinkTime, A::Error> {
                let m =
                    ThinkTimeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ThinkTime {
                    dist: m.dist,
                    mean: m.mean,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A fixed think time is written as the plain duration, as before `dist` existed.
impl Serialize for ThinkTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.dist {
            ThinkDist::Fixed => self.mean.serialize(s),
            dist => ThinkTimeMap {
                dist,
                mean: self.mean,
            }
            .serialize(s),
        }
    }
}

/// The most content the cluster accepts in one message (its `MAX_CONTENT_BYTES`).
pub const MAX_MESSAGE_BYTES: u32 = 64 * 1024;

/// `message_size`: the content length of sent messages, as written. Which fields apply
/// depends on `dist`; [`Scenario::validate`] checks them (so an error points at the field)
/// and [`MessageSize::shape`] reads them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSize {
    /// Absent means uniform (`{min, max}`, the original form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist: Option<SizeDist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<u32>,
}

impl Default for MessageSize {
    fn default() -> Self {
        MessageSize {
            dist: None,
            min: Some(16),
            max: Some(256),
            bytes: None,
            median: None,
            p99: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeDist {
    /// Uniform on `[min, max]`.
    Uniform,
    /// Always `bytes`.
    Fixed,
    /// Log-normal with the given median and 99th percentile: most messages short, a long
    /// tail of long ones, as in real chats.
    Lognormal,
}

impl SizeDist {
    pub fn name(self) -> &'static str {
        match self {
            SizeDist::Uniform => "uniform",
            SizeDist::Fixed => "fixed",
            SizeDist::Lognormal => "lognormal",
        }
    }

    /// The fields this distribution takes.
    fn fields(self) -> &'static [&'static str] {
        match self {
            SizeDist::Uniform => &["min", "max"],
            SizeDist::Fixed => &["bytes"],
            SizeDist::Lognormal => &["median", "p99"],
        }
    }
}

/// A checked `message_size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeShape {
    Uniform { min: u32, max: u32 },
    Fixed { bytes: u32 },
    Lognormal { median: u32, p99: u32 },
}

impl MessageSize {
    /// The distribution (uniform when `dist` is absent).
    pub fn dist(&self) -> SizeDist {
        self.dist.unwrap_or(SizeDist::Uniform)
    }

    fn field(&self, name: &str) -> Option<u32> {
        match name {
            "min" => self.min,
            "max" => self.max,
            "bytes" => self.bytes,
            "median" => self.median,
            "p99" => self.p99,
            _ => None,
        }
    }

    /// The sizes to draw from; `None` when the fields do not fit `dist` (which
    /// [`Scenario::validate`] reports).
    pub fn shape(&self) -> Option<SizeShape> {
        Some(match self.dist() {
            SizeDist::Uniform => SizeShape::Uniform {
                min: self.min?,
                max: self.max?,
            },
            SizeDist::Fixed => SizeShape::Fixed { bytes: self.bytes? },
            SizeDist::Lognormal => SizeShape::Lognormal {
                median: self.median?,
                p99: self.p99?,
            },
        })
    }

    /// The largest size a message may have (what filler is cut for).
    pub fn largest(&self) -> u32 {
        match self.shape() {
            Some(SizeShape::Uniform { max, .. }) => max,
            Some(SizeShape::Fixed { bytes }) => bytes,
            Some(SizeShape::Lognormal { .. }) | None => MAX_MESSAGE_BYTES,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    #[default]
    Linearizable,
    Local,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reads {
    #[serde(default)]
    pub consistency: Consistency,
}

/// The system a scenario runs against: the same chat operations, pacing, history check and
/// report, through one module per system (`crate::system`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    #[default]
    Telegraft,
    Etcd,
}

impl System {
    pub fn is_telegraft(&self) -> bool {
        *self == System::Telegraft
    }

    /// The name a scenario and `summary.json` use.
    pub fn name(&self) -> &'static str {
        match self {
            System::Telegraft => "telegraft",
            System::Etcd => "etcd",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a run starts its replicas (`crate::control`): processes on loopback, or containers
/// from the `telegraft:latest` image on a private Docker network, where faults go through the
/// engine and a partition is a real network cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deploy {
    #[default]
    Local,
    Docker,
}

impl Deploy {
    pub fn is_local(&self) -> bool {
        *self == Deploy::Local
    }

    /// The name a scenario and `summary.json` use.
    pub fn name(&self) -> &'static str {
        match self {
            Deploy::Local => "local",
            Deploy::Docker => "docker",
        }
    }
}

/// What a run's cluster secures, each switch on its own so that each one's cost can be
/// measured alone: `tls` starts the replicas with certificates from `telegraft certs`
/// (`--tls-dir`) and every client speaks TLS; `auth` starts them with `--require-auth`,
/// gives every dataset user a password, logs each one in before the load, and sends every
/// call with its user's token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub auth: bool,
}

impl Security {
    pub fn is_default(&self) -> bool {
        *self == Security::default()
    }

    /// How the run page and terminal name it: `plaintext`, `TLS`, `auth`, `TLS + auth`.
    pub fn label(&self) -> &'static str {
        match (self.tls, self.auth) {
            (false, false) => "plaintext, no auth",
            (true, false) => "TLS",
            (false, true) => "auth (tokens)",
            (true, true) => "TLS + auth",
        }
    }
}

/// CPU limits per container (`docker run --cpus`), so that the generator cannot eat the
/// replicas' share of the machine, nor one replica another's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs each replica's container may use (`1.5`: one and a half cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_cpus: Option<f64>,
    /// CPUs each load generator's container may use (with `--workers`, each worker runs in a
    /// container of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_cpus: Option<f64>,
}

impl Resources {
    pub fn is_default(&self) -> bool {
        *self == Resources::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Spread requests over every replica (followers forward to the leader).
    #[default]
    Any,
    /// Send every request to the current leader.
    Leader,
}

/// One operation's objectives: latency percentiles (of the corrected latency), the share of
/// calls that may fail, and the least throughput of successful calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p9999: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Dur>,
    /// The most calls that may fail (errors and timeouts), as a share of all calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<Percent>,
    /// The least successful calls per second over the measured window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_throughput: Option<Positive>,
}

impl Slo {
    /// The latency objectives that are set, by percentile name (`p99`), in order.
    pub fn latencies(&self) -> Vec<(&'static str, Duration)> {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p999", self.p999),
            ("p9999", self.p9999),
            ("max", self.max),
        ]
        .into_iter()
        .filter_map(|(name, d)| d.map(|d| (name, d.0)))
        .collect()
    }

    fn is_empty(&self) -> bool {
        self.latencies().is_empty() && self.error_rate.is_none() && self.min_throughput.is_none()
    }
}

/// Objectives on the run as a whole (`slo.run`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSlo {
    /// `kept`: the generator kept the open model's schedule (no pacing warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Kept>,
    /// The most write unavailability any one fault may cost, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_ms: Option<NonNegative>,
}

impl RunSlo {
    pub fn is_empty(&self) -> bool {
        self.schedule.is_none() && self.unavailable_ms.is_none()
    }
}

/// The one value `slo.run.schedule` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    Kept,
}

/// `slo:` in a scenario: a map from operation names to [`Slo`], and `run` to [`RunSlo`].
/// Hand-written (de)serialisation because one key (`run`) is not an operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slos {
    pub ops: BTreeMap<Op, Slo>,
    pub run: RunSlo,
}

impl Slos {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.run.is_empty()
    }
}

impl Serialize for Slos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (op, slo) in &self.ops {
            map.serialize_entry(op, slo)?;
        }
        if !self.run.is_empty() {
            map.serialize_entry("run", &self.run)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Slos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Slos;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from operation names (or run) to objectives")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Slos, A::Error> {
                let mut slos = Slos::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "run" {
                        slos.run = map.next_value()?;
                        continue;
                    }
                    match Op::deserialize(serde::de::value::StrDeserializer::<A::Error>::new(&key))
                    {
                        Ok(op) => {
                            slos.ops.insert(op, map.next_value()?);
                        }
                        // Failed inside the value, so the error's path names the key.
                        Err(_) => map.next_value_seed(Refuse(format!(
                            "`{key}` is neither run nor an operation (create_user, \
                             create_chat, join_chat, send_message, get_messages, get_chat_users)"
                        )))?,
                    }
                }
                Ok(slos)
            }
        }
        d.deserialize_map(V)
    }
}

/// A map value that is refused with a message, whatever it is.
struct Refuse(String);

impl<'de> serde::de::DeserializeSeed<'de> for Refuse {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(serde::de::Error::custom(self.0))
    }
}

/// `cluster:`: the settings a run's local replicas start with. Each is a `telegraft node`
/// flag; what is absent keeps the replica's default. The seed project planned its
/// evaluation as "with and without message queue"; `batching: off` is that experiment's
/// baseline (one entry per fdatasync, one entry per append message), so the same scenario
/// measured with `on` and `off` shows what batching in front of Raft buys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Group commit and batched replication (default `on`).
    #[serde(default, skip_serializing_if = "Switch::is_on")]
    pub batching: Switch,
    /// A snapshot (and a compacted log) is due once this many entries were applied since
    /// the last; 0 turns this trigger off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// ... or once this many bytes of commands were; 0 turns this trigger off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<u64>,
    /// The shortest election timeout (each is drawn between it and twice it); a multiple
    /// of 10 ms, above `heartbeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout: Option<Dur>,
    /// A leader's heartbeat interval; a multiple of 10 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Dur>,
    /// Followers serve linearizable reads with a read index from the leader (default
    /// `on`); `off` forwards every linearizable read to the leader.
    #[serde(default, skip_serializing_if = "Switch::is_on")]
    pub follower_reads: Switch,
}

impl ClusterSettings {
    pub fn is_default(&self) -> bool {
        *self == ClusterSettings::default()
    }

    /// The `etcd` flags that carry the timings, for `system: etcd` (the only settings etcd
    /// members take): `--heartbeat-interval` and `--election-timeout`, in ms. etcd draws
    /// each election timeout between it and twice it, as the replicas do.
    pub fn etcd_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = &self.heartbeat {
            a.extend([
                "--heartbeat-interval".to_string(),
                d.0.as_millis().to_string(),
            ]);
        }
        if let Some(d) = &self.election_timeout {
            a.extend([
                "--election-timeout".to_string(),
                d.0.as_millis().to_string(),
            ]);
        }
        a
    }

    /// The `telegraft node` flags that carry these settings.
    pub fn node_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if !self.batching.is_on() {
            a.extend(["--batching".to_string(), "off".to_string()]);
        }
        if let Some(n) = self.snapshot_every {
            a.extend(["--snapshot-every".to_string(), n.to_string()]);
        }
        if let Some(n) = self.snapshot_bytes {
            a.extend(["--snapshot-bytes".to_string(), n.to_string()]);
        }
        if !self.follower_reads.is_on() {
            a.extend(["--follower-reads".to_string(), "off".to_string()]);
        }
        // Both timings go together: the replica checks one against the other's default.
        if self.election_timeout.is_some() || self.heartbeat.is_some() {
            let ms = |d: Option<&Dur>, default: u64| {
                format!("{}ms", d.map_or(default, |d| d.0.as_millis() as u64))
            };
            a.extend([
                "--heartbeat".to_string(),
                ms(self.heartbeat.as_ref(), 50),
                "--election-timeout".to_string(),
                ms(self.election_timeout.as_ref(), 150),
            ]);
        }
        a
    }
}

/// A feature that is on (the default) or off: `check` (the history check; `off` for targets
/// that are not Telegraft clusters, such as test fakes) and `metrics` (the replicas'
/// metrics endpoints and their sampling). YAML's `true`/`false` are accepted too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Switch {
    #[default]
    On,
    Off,
}

impl Switch {
    pub fn is_on(&self) -> bool {
        *self == Switch::On
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Switch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("on or off")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Switch, E> {
                Ok(if v { Switch::On } else { Switch::Off })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Switch, E> {
                match s.trim() {
                    "on" => Ok(Switch::On),
                    "off" => Ok(Switch::Off),
                    _ => Err(E::custom(format!("expected on or off, got '{s}'"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Switch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Switch::On => "on",
            Switch::Off => "off",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL the target replica.
    Kill,
    /// Start a killed replica again, on the same data directory.
    Restart,
    /// SIGSTOP the target for `for`, then SIGCONT.
    Pause,
    /// Cut the target's side off from the other replicas for `for`, in both directions.
    Partition,
}

impl Action {
    /// The action as a scenario names it (`kill`, `partition`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Partition => "partition",
        }
    }

    /// Whether this action can hit `target`: a restart needs a replica that was killed, a
    /// kill or a pause one replica, and a partition any side but `killed`.
    pub fn can_target(self, target: Target) -> bool {
        match self {
            Action::Restart => matches!(target, Target::Killed | Target::Node(_)),
            Action::Kill | Action::Pause => {
                matches!(target, Target::Leader | Target::Follower | Target::Node(_))
            }
            Action::Partition => !matches!(target, Target::Killed),
        }
    }
}

/// Which replica a fault hits, resolved when the fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
    Node(u64),
    /// The replica the latest `kill` hit (for `restart`).
    Killed,
    Minority,
    Majority,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        Ok(match t {
            "leader" => Target::Leader,
            "follower" => Target::Follower,
            "killed" => Target::Killed,
            "minority" => Target::Minority,
            "majority" => Target::Majority,
            _ => match t.strip_prefix("node ").map(|n| n.trim().parse::<u64>()) {
                Some(Ok(n)) if n > 0 => Target::Node(n),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "expected leader, follower, killed, minority, majority or node N, got '{t}'"
                    )));
                }
            },
        })
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Target::Leader => f.write_str("leader"),
            Target::Follower => f.write_str("follower"),
            Target::Node(n) => write!(f, "node {n}"),
            Target::Killed => f.write_str("killed"),
            Target::Minority => f.write_str("minority"),
            Target::Majority => f.write_str("majority"),
        }
    }
}

/// One fault: at `at` (from the start of the run, warm-up included), do `action` to `target`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at: Dur,
    pub action: Action,
    pub target: Target,
    /// How long a pause or a partition lasts.
    #[serde(default, rename = "for")]
    pub duration: Option<Dur>,
}

/// A scenario error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field, as a dotted path (`load.rate`, `mix.send_message`), or `.` for the file.
    pub path: String,
    pub message: String,
}

impl Scenario {
    /// Reads, overrides and checks a scenario file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            column: 0,
            path: ".".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&file, &text, overrides)
    }

    /// Parses scenario text (`file` names it in errors).
    pub fn parse(file: &str, text: &str, overrides: &[String]) -> Result<Scenario, ScenarioError> {
        let at = |path: &str, message: String| {
            let (line, column) = locate(text, path);
            ScenarioError {
                file: file.to_string(),
                line,
                column,
                path: path.to_string(),
                message,
            }
        };
        let mut tree: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ScenarioError {
                file: file.to_string(),
                line,
                column,
                path: ".".into(),
                message: strip_location(&e.to_string()),
            }
        })?;
        for o in overrides {
            let (path, value) = o.split_once('=').ok_or_else(|| ScenarioError {
                file: "--set".into(),
                line: 0,
                column: 0,
                path: o.clone(),
                message: "expected PATH=VALUE".into(),
            })?;
            let value: Value =
                serde_yaml_ng::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
            set_path(&mut tree, path, value).map_err(|message| ScenarioError {
                file: "--set".into(),
                line: 0,
                column: 0,
                path: path.into(),
                message,
            })?;
        }
        let scenario: Scenario = serde_path_to_error::deserialize(tree).map_err(|e| {
            let mut path = e.path().to_string();
            let message = strip_location(&e.inner().to_string());
            // A bad map key shows as `?` in the path: name it after the key itself.
            if let Some(parent) = path.strip_suffix(".?")
                && let Some(key) = message.split('`').nth(1)
            {
                path = format!("{parent}.{key}");
            }
            if overrides
                .iter()
                .any(|o| o.split_once('=').is_some_and(|(p, _)| path.starts_with(p)))
            {
                ScenarioError {
                    file: "--set".into(),
                    line: 0,
                    column: 0,
                    path,
                    message,
                }
            } else {
                at(&path, message)
            }
        })?;
        if let Some((path, message)) = scenario.validate().into_iter().next() {
            return Err(at(&path, message));
        }
        Ok(scenario)
    }

    /// Checks across fields. Returns (field path, message) for each problem, in the order of
    /// the file's sections.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        self.validate_identity(&mut p);
        self.validate_dataset(&mut p);
        self.validate_load(&mut p);
        self.validate_calls(&mut p);
        self.validate_slos(&mut p);
        self.validate_cluster(&mut p);
        self.validate_resources(&mut p);
        self.validate_security(&mut p);
        self.validate_faults(&mut p);
        p.0
    }

    /// Security is Telegraft's (etcd's own TLS and users are not driven), and `login`
    /// needs authentication.
    fn validate_security(&self, p: &mut Problems) {
        let s = &self.security;
        if self.system == System::Etcd && !s.is_default() {
            p.add(
                "security",
                "applies to system: telegraft only (etcd's TLS and users are not driven)",
            );
        }
        if self.mix.get(&Op::Login).is_some_and(|w| *w > 0) && !s.auth {
            p.add(
                "mix.login",
                "login needs security: {auth: true} (without authentication there is \
                 nothing to log in to)",
            );
        }
    }

    /// CPU limits: positive, finite, and only where there are containers to limit.
    fn validate_resources(&self, p: &mut Problems) {
        let r = &self.resources;
        for (name, v) in [
            ("replica_cpus", r.replica_cpus),
            ("loadgen_cpus", r.loadgen_cpus),
        ] {
            let Some(v) = v else { continue };
            if !(v.is_finite() && (0.01..=1024.0).contains(&v)) {
                p.add(
                    &format!("resources.{name}"),
                    format!("must be a number of CPUs from 0.01 to 1024, not {v}"),
                );
            } else if self.deploy == Deploy::Local {
                p.add(
                    &format!("resources.{name}"),
                    "CPU limits apply to containers: set deploy: docker (--deploy docker)",
                );
            }
        }
    }

    /// `cluster:` timings as the replicas will take them: whole 10 ms ticks, an election
    /// timeout above the heartbeat (each absent one at the replica's default, 50 and 150 ms).
    fn validate_cluster(&self, p: &mut Problems) {
        let c = &self.cluster;
        if self.system == System::Etcd {
            let timings_only = ClusterSettings {
                heartbeat: c.heartbeat,
                election_timeout: c.election_timeout,
                ..ClusterSettings::default()
            };
            if *c != timings_only {
                p.add(
                    "cluster",
                    "with system: etcd only `heartbeat` and `election_timeout` apply (etcd's \
                     --heartbeat-interval and --election-timeout); the rest are `telegraft \
                     node` settings",
                );
            }
            // etcd refuses to start with an election timeout under 5 heartbeats; its
            // defaults are 100 and 1000 ms.
            let heartbeat = c.heartbeat.map_or(Duration::from_millis(100), |d| d.0);
            let election = c
                .election_timeout
                .map_or(Duration::from_millis(1000), |d| d.0);
            if (c.heartbeat.is_some() || c.election_timeout.is_some()) && election < 5 * heartbeat {
                p.add(
                    "cluster.election_timeout",
                    format!(
                        "etcd needs an election timeout of at least 5 heartbeats: {} is under \
                         5 x {}",
                        humantime::format_duration(election),
                        humantime::format_duration(heartbeat)
                    ),
                );
            }
            return;
        }
        let mut tick = |path: &str, d: Option<&Dur>| {
            if let Some(d) = d
                && (d.0.is_zero() || d.0.as_nanos() % 10_000_000 != 0)
            {
                p.add(
                    path,
                    format!(
                        "expected a positive multiple of 10ms (the replicas' tick), got {}",
                        humantime::format_duration(d.0)
                    ),
                );
                return false;
            }
            true
        };
        let ok = tick("cluster.heartbeat", c.heartbeat.as_ref())
            & tick("cluster.election_timeout", c.election_timeout.as_ref());
        let heartbeat = c.heartbeat.map_or(Duration::from_millis(50), |d| d.0);
        let election = c
            .election_timeout
            .map_or(Duration::from_millis(150), |d| d.0);
        if ok && (c.heartbeat.is_some() || c.election_timeout.is_some()) && election <= heartbeat {
            let path = if c.election_timeout.is_some() {
                "cluster.election_timeout"
            } else {
                "cluster.heartbeat"
            };
            p.add(
                path,
                format!(
                    "the election timeout ({}) must be longer than the heartbeat ({})",
                    humantime::format_duration(election),
                    humantime::format_duration(heartbeat)
                ),
            );
        }
    }

    fn validate_identity(&self, p: &mut Problems) {
        if self.name.trim().is_empty() {
            p.add("name", "must not be empty");
        }
        if self.replicas == 0 || self.replicas > 15 {
            p.add(
                "replicas",
                format!("expected 1 to 15 replicas, got {}", self.replicas),
            );
        }
    }

    fn validate_dataset(&self, p: &mut Problems) {
        let d = &self.dataset;
        if d.users == 0 {
            p.add("dataset.users", "expected at least one user");
        }
        if d.chats == 0 {
            p.add("dataset.chats", "expected at least one chat");
        }
        if d.members_per_chat == 0 || d.members_per_chat > d.users {
            p.add(
                "dataset.members_per_chat",
                format!("expected 1 to dataset.users ({}) members", d.users),
            );
        }
    }

    /// The load model's fields fit together, and the measured window is longer than zero
    /// and than the warm-up.
    fn validate_load(&self, p: &mut Problems) {
        let l = &self.load;
        if l.users == 0 {
            p.add("load.users", "expected at least one user");
        }
        match l.model {
            Model::Open => {
                match (l.rate.is_some(), l.steps.is_empty()) {
                    (false, true) => p.add("load.rate", "the open model needs a rate (or steps)"),
                    (true, false) => p.add(
                        "load.steps",
                        "give either load.rate or load.steps, not both",
                    ),
                    _ => {}
                }
                if !l.steps.is_empty() && l.duration.is_some() {
                    p.add(
                        "load.duration",
                        "with load.steps the duration is the sum of the steps",
                    );
                }
                if l.think_time.mean.0 > Duration::ZERO || l.think_time.dist != ThinkDist::Fixed {
                    p.add(
                        "load.think_time",
                        "think time applies to the closed model only",
                    );
                }
            }
            Model::Closed => {
                if l.rate.is_some() || !l.steps.is_empty() {
                    p.add(
                        "load.rate",
                        "the closed model has no rate: set load.users and load.think_time",
                    );
                }
                if l.arrivals != Arrivals::Uniform {
                    p.add(
                        "load.arrivals",
                        "arrivals apply to the open model only (the closed model has \
                         load.think_time)",
                    );
                }
                if l.think_time.dist != ThinkDist::Fixed && l.think_time.mean.0.is_zero() {
                    p.add(
                        "load.think_time.mean",
                        format!(
                            "expected a mean longer than zero (dist: {})",
                            l.think_time.dist.name()
                        ),
                    );
                }
            }
        }
        if l.timeout.0.is_zero() {
            p.add("load.timeout", "expected a timeout longer than zero");
        }
        let duration = self.duration();
        if duration.is_zero() {
            p.add(
                "load.duration",
                "expected a measured duration longer than zero",
            );
        } else if l.warmup.0 > duration {
            p.add(
                "load.warmup",
                format!(
                    "warm-up ({}) is longer than the measured duration ({})",
                    humantime::format_duration(l.warmup.0),
                    humantime::format_duration(duration)
                ),
            );
        }
    }

    /// The mix and the message sizes.
    fn validate_calls(&self, p: &mut Problems) {
        if self.mix.values().all(|w| *w == 0) {
            p.add(
                "mix",
                "weights are all zero: at least one operation needs a positive weight",
            );
        }
        self.validate_message_size(p);
    }

    /// `message_size`: the fields of its `dist`, and only those, with sizes the cluster
    /// accepts.
    fn validate_message_size(&self, p: &mut Problems) {
        let m = &self.message_size;
        let dist = m.dist();
        let takes = dist.fields();
        for name in ["min", "max", "bytes", "median", "p99"] {
            if m.field(name).is_some() && !takes.contains(&name) {
                p.add(
                    &format!("message_size.{name}"),
                    format!(
                        "does not apply to dist: {}, which takes {}",
                        dist.name(),
                        takes.join(" and ")
                    ),
                );
            }
        }
        for name in takes {
            if m.field(name).is_none() {
                p.add(
                    "message_size",
                    format!(
                        "missing field `{name}` (dist: {} takes {})",
                        dist.name(),
                        takes.join(" and ")
                    ),
                );
            }
        }
        let too_large = |p: &mut Problems, name: &str, v: u32| {
            if v > MAX_MESSAGE_BYTES {
                p.add(
                    &format!("message_size.{name}"),
                    format!("the cluster accepts at most {MAX_MESSAGE_BYTES} bytes of content"),
                );
            }
        };
        match m.shape() {
            Some(SizeShape::Uniform { min, max }) => {
                if min > max {
                    p.add("message_size.min", "min is larger than max");
                }
                too_large(p, "max", max);
            }
            Some(SizeShape::Fixed { bytes }) => {
                if bytes == 0 {
                    p.add("message_size.bytes", "expected at least 1 byte");
                }
                too_large(p, "bytes", bytes);
            }
            Some(SizeShape::Lognormal { median, p99 }) => {
                if median == 0 {
                    p.add("message_size.median", "expected at least 1 byte");
                }
                if p99 <= median {
                    p.add("message_size.p99", "must be larger than median");
                }
                too_large(p, "p99", p99);
            }
            None => {}
        }
    }

    fn validate_slos(&self, p: &mut Problems) {
        for (op, slo) in &self.slo.ops {
            let at = format!("slo.{}", op.name());
            if slo.is_empty() {
                p.add(
                    &at,
                    "expected at least one of p50, p90, p99, p999, p9999, max, error_rate, \
                     min_throughput",
                );
            }
            if self.mix.get(op).copied().unwrap_or(0) == 0 {
                p.add(&at, "this operation has no weight in mix");
            }
        }
        if self.slo.run.schedule.is_some() && self.load.model == Model::Closed {
            p.add(
                "slo.run.schedule",
                "the closed model has no schedule to keep",
            );
        }
    }

    /// Each fault fires inside the run, lasts when it must, and names a target its action can
    /// hit.
    fn validate_faults(&self, p: &mut Problems) {
        let end = self.load.warmup.0 + self.duration();
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults.{i}");
            if f.at.0 >= end {
                p.add(
                    &at,
                    format!(
                        "at {} is after the run ends ({} with warm-up)",
                        humantime::format_duration(f.at.0),
                        humantime::format_duration(end)
                    ),
                );
            }
            match f.action {
                Action::Pause | Action::Partition if f.duration.is_none_or(|d| d.0.is_zero()) => {
                    p.add(&at, "a pause or a partition needs `for`, how long it lasts")
                }
                Action::Kill | Action::Restart if f.duration.is_some() => {
                    p.add(&at, "`for` applies to pause and partition only")
                }
                _ => {}
            }
            if !f.action.can_target(f.target) {
                p.add(
                    &at,
                    format!("{} cannot target {}", f.action.name(), f.target),
                );
            }
            if f.action == Action::Partition
                && self.system == System::Etcd
                && self.deploy == Deploy::Local
            {
                p.add(
                    &at,
                    "a partition needs the replicas' fault hook, which local etcd members do \
                     not have: use kill, restart or pause with system: etcd, or run on \
                     containers (--deploy docker), where a partition is a network cut",
                );
            }
            if let Target::Node(n) = f.target
                && n > u64::from(self.replicas)
            {
                p.add(
                    &at,
                    format!("node {n} does not exist with {} replicas", self.replicas),
                );
            }
        }
    }

    /// The measured duration: `load.duration`, or the sum of `load.steps`.
    pub fn duration(&self) -> Duration {
        if self.load.steps.is_empty() {
            self.load.duration.map_or(Duration::ZERO, |d| d.0)
        } else {
            self.load.steps.iter().map(|s| s.duration.0).sum()
        }
    }

    /// The effective scenario, as YAML (what a results folder records).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("scenarios serialize")
    }
}

/// What [`Scenario::validate`] found: (field path, message), in the order found.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push((path.to_string(), message.into()));
    }
}

/// Drops serde_yaml's own " at line L column C" (we print the location first).
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Sets `a.b.c` in a YAML tree, creating mappings on the way.
fn set_path(tree: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("expected a dotted field path like load.rate".into());
    }
    for (i, part) in parts.iter().enumerate() {
        let Value::Mapping(map) = node else {
            return Err(format!("{} is not a mapping", parts[..i].join(".")));
        };
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Finds the line and column (1-based) of a dotted field path in YAML text, following block
/// indentation and `{a: 1, b: 2}` flow mappings. Falls back to the nearest parent found.
/// Hand-written: errors found after parsing (in the tree, with `--set` applied, or by
/// [`Scenario::validate`]) have a field path but no position, and serde_yaml_ng keeps no
/// spans to look one up.
pub fn locate(text: &str, path: &str) -> (usize, usize) {
    let parts: Vec<&str> = path
        .split('.')
        .filter(|p| !p.is_empty() && *p != "?")
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let (mut best, mut from, mut min_indent) = ((1, 1), 0usize, 0usize);
    'parts: for part in parts {
        let needle = format!("{part}:");
        for (i, line) in lines.iter().enumerate().skip(from) {
            let content = line.split('#').next().unwrap_or("");
            let indent = content.len() - content.trim_start().len();
            if i > from && !content.trim().is_empty() && indent < min_indent {
                break;
            }
            // A block key at the start of the line, or a key inside a flow mapping.
            let found = if content.trim_start().starts_with(&needle) {
                Some(indent)
            } else if i == from.saturating_sub(1).max(best.0 - 1) || content.contains('{') {
                find_flow_key(content, part)
            } else {
                None
            };
            if let Some(col) = found {
                best = (i + 1, col + 1);
                from = i + 1;
                min_indent = indent + 1;
                // A flow mapping on this line: the next key is on the same line.
                if content[col..].contains('{') {
                    from = i;
                }
                continue 'parts;
            }
        }
        break;
    }
    best
}

fn find_flow_key(line: &str, key: &str) -> Option<usize> {
    let mut start = 0;
    while let Some(pos) = line[start..].find(key) {
        let at = start + pos;
        let before = line[..at].trim_end().chars().last();
        let after = line[at + key.len()..].trim_start().chars().next();
        if matches!(before, Some('{') | Some(',')) && after == Some(':') {
            return Some(at);
        }
        start = at + key.len();
    }
    None
}
