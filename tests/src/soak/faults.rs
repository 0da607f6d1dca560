//! The soak's fault schedule: planned up front from a seed (so it is printed whole and
//! replays with `SOAK_SEED`), then applied one fault at a time while data flows.
//!
//! A round holds every [`Fault`] kind once, in a random order, with random targets and
//! durations, each followed by a random quiet gap. The short form is one round; with
//! `SOAK_SECONDS` rounds follow each other until their planned time reaches it.

use super::rig::Rig;
use super::{DEVICES, DUPLICATE_WINDOW, Result};
use crate::Schedule;
use std::fmt;
use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL an agent while it is live, restart it after `down`.
    AgentKill {
        /// The device.
        device: usize,
        /// How long it stays dead.
        down: Duration,
    },
    /// Sever the device's link so that its agent spills to its buffer, SIGKILL the agent
    /// `after` it started spilling (in the middle of buffer writes), restart it after
    /// `down`, then restore the link.
    AgentKillSpilling {
        /// The device.
        device: usize,
        /// Spilling this long before the kill.
        after: Duration,
        /// How long it stays dead.
        down: Duration,
    },
    /// SIGSTOP a leaf for `pause`, then SIGCONT.
    LeafPause {
        /// The device.
        device: usize,
        /// How long.
        pause: Duration,
    },
    /// SIGKILL a leaf, restart it after `down`.
    LeafKill {
        /// The device.
        device: usize,
        /// How long it stays dead.
        down: Duration,
    },
    /// SIGSTOP the hub for `pause`.
    HubPause {
        /// How long.
        pause: Duration,
    },
    /// SIGKILL the hub, restart it after `down`.
    HubKill {
        /// How long it stays dead.
        down: Duration,
    },
    /// SIGSTOP the Kafka broker for `pause`.
    KafkaPause {
        /// How long.
        pause: Duration,
    },
    /// SIGKILL the Kafka broker, restart it after `down` (sqlite keeps its records).
    KafkaKill {
        /// How long it stays dead.
        down: Duration,
    },
    /// SIGSTOP an uplink for `pause`.
    UplinkPause {
        /// Which (0 or 1).
        uplink: usize,
        /// How long.
        pause: Duration,
    },
    /// SIGKILL an uplink, restart it after `down`.
    UplinkKill {
        /// Which (0 or 1).
        uplink: usize,
        /// How long it stays dead.
        down: Duration,
    },
    /// The hub's answers to a leaf are lost for `lose` (it stores the agent's messages, the
    /// acks never arrive), then the leaf's link is severed for `cut`, longer than the
    /// stream's duplicate window: the agent resends after the window.
    CutBeyondWindow {
        /// The device.
        device: usize,
        /// Answers lost this long before the cut.
        lose: Duration,
        /// How long the link stays severed.
        cut: Duration,
    },
}

/// A fault and the quiet time after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: Fault,
    /// Data flows undisturbed this long afterwards.
    pub gap: Duration,
}

/// Kinds of [`Fault`].
const KINDS: u64 = 11;

fn ms(rng: &mut Schedule, from: u64, to: u64) -> Duration {
    Duration::from_millis(from + rng.below(to - from + 1))
}

fn fault(kind: u64, rng: &mut Schedule) -> Fault {
    let device = usize::try_from(rng.below(DEVICES as u64)).unwrap_or(0);
    let uplink = usize::try_from(rng.below(2)).unwrap_or(0);
    let window = u64::try_from(DUPLICATE_WINDOW.as_millis()).unwrap_or(2000);
    match kind {
        0 => Fault::AgentKill {
            device,
            down: ms(rng, 0, 1500),
        },
        1 => Fault::AgentKillSpilling {
            device,
            after: ms(rng, 0, 1000),
            down: ms(rng, 0, 1500),
        },
        2 => Fault::LeafPause {
            device,
            pause: ms(rng, 500, 4000),
        },
        3 => Fault::LeafKill {
            device,
            down: ms(rng, 0, 3000),
        },
        4 => Fault::HubPause {
            pause: ms(rng, 500, 4000),
        },
        5 => Fault::HubKill {
            down: ms(rng, 0, 3000),
        },
        6 => Fault::KafkaPause {
            pause: ms(rng, 500, 6000),
        },
        7 => Fault::KafkaKill {
            down: ms(rng, 0, 3000),
        },
        8 => Fault::UplinkPause {
            uplink,
            pause: ms(rng, 500, 7000),
        },
        9 => Fault::UplinkKill {
            uplink,
            down: ms(rng, 0, 2000),
        },
        _ => Fault::CutBeyondWindow {
            device,
            lose: ms(rng, 300, 1500),
            cut: ms(rng, 2 * window, 4 * window),
        },
    }
}

impl Fault {
    /// The time it is planned to take (restarts take longer).
    pub fn planned(&self) -> Duration {
        match self {
            Fault::AgentKill { down, .. }
            | Fault::LeafKill { down, .. }
            | Fault::HubKill { down }
            | Fault::KafkaKill { down }
            | Fault::UplinkKill { down, .. } => *down,
            Fault::AgentKillSpilling { after, down, .. } => *after + *down + Duration::from_secs(2),
            Fault::LeafPause { pause, .. }
            | Fault::HubPause { pause }
            | Fault::KafkaPause { pause }
            | Fault::UplinkPause { pause, .. } => *pause,
            Fault::CutBeyondWindow { lose, cut, .. } => *lose + *cut,
        }
    }
}

/// The schedule of `seed`: one round, or rounds until `seconds` of planned time.
pub fn plan(seed: u64, seconds: Option<u64>) -> Vec<Step> {
    let mut rng = Schedule::new(seed);
    let budget = Duration::from_secs(seconds.unwrap_or(0));
    let mut steps = Vec::new();
    let mut planned = Duration::ZERO;
    loop {
        let mut kinds: Vec<u64> = (0..KINDS).collect();
        for i in (1..kinds.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
            kinds.swap(i, j);
        }
        for kind in kinds {
            let fault = fault(kind, &mut rng);
            let gap = ms(&mut rng, 1000, 3000);
            planned += fault.planned() + gap;
            steps.push(Step { fault, gap });
            if seconds.is_some() && planned >= budget {
                return steps;
            }
        }
        if seconds.is_none() {
            return steps;
        }
    }
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Applies `step` to `rig` and waits its gap.
pub fn apply(rig: &mut Rig, step: &Step) -> Result<()> {
    match &step.fault {
        Fault::AgentKill { device, down } => {
            rig.kill_agent(*device)?;
            sleep(*down);
            rig.restart_agent(*device)?;
        }
        Fault::AgentKillSpilling {
            device,
            after,
            down,
        } => {
            let d = *device;
            rig.devices[d].proxy.sever();
            let what = format!("{} spilling", rig.devices[d].name);
            super::rig::wait_for(Duration::from_secs(20), &what, || {
                rig.agent_metric(d, "tributary_agent_spilled_messages_total")
                    .is_some_and(|v| v > 0.0)
                    && rig
                        .agent_metric(d, "tributary_agent_buffer_records")
                        .is_some_and(|v| v > 0.0)
            })?;
            sleep(*after);
            rig.kill_agent(d)?;
            sleep(*down);
            rig.restart_agent(d)?;
            sleep(Duration::from_secs(1));
            rig.devices[d].proxy.restore();
            rig.wait_leaf(d)?;
        }
        Fault::LeafPause { device, pause } => {
            rig.devices[*device].leaf.pause()?;
            sleep(*pause);
            rig.devices[*device].leaf.resume()?;
        }
        Fault::LeafKill { device, down } => {
            rig.devices[*device].leaf.kill()?;
            sleep(*down);
            rig.devices[*device].leaf.restart()?;
            rig.wait_leaf(*device)?;
        }
        Fault::HubPause { pause } => {
            rig.hub.pause()?;
            sleep(*pause);
            rig.hub.resume()?;
        }
        Fault::HubKill { down } => {
            rig.hub.kill()?;
            sleep(*down);
            rig.hub.restart()?;
            rig.wait_leafs()?;
        }
        Fault::KafkaPause { pause } => {
            rig.kafka.pause()?;
            sleep(*pause);
            rig.kafka.resume()?;
        }
        Fault::KafkaKill { down } => {
            rig.kafka.kill()?;
            sleep(*down);
            rig.kafka.restart()?;
        }
        Fault::UplinkPause { uplink, pause } => {
            rig.uplinks[*uplink].process.pause()?;
            sleep(*pause);
            rig.uplinks[*uplink].process.resume()?;
        }
        Fault::UplinkKill { uplink, down } => {
            rig.uplinks[*uplink].process.kill()?;
            sleep(*down);
            rig.uplinks[*uplink].restart()?;
        }
        Fault::CutBeyondWindow { device, lose, cut } => {
            let proxy = &rig.devices[*device].proxy;
            proxy.lose_replies();
            sleep(*lose);
            proxy.sever();
            sleep(*cut);
            proxy.restore();
            rig.wait_leaf(*device)?;
        }
    }
    sleep(step.gap);
    Ok(())
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::AgentKill { device, down } => {
                write!(f, "SIGKILL agent soak-{device}, restart after {down:?}")
            }
            Fault::AgentKillSpilling {
                device,
                after,
                down,
            } => write!(
                f,
                "sever soak-{device}'s link, SIGKILL its agent {after:?} into spilling, restart after {down:?}, restore"
            ),
            Fault::LeafPause { device, pause } => {
                write!(f, "SIGSTOP leaf of soak-{device} for {pause:?}")
            }
            Fault::LeafKill { device, down } => {
                write!(f, "SIGKILL leaf of soak-{device}, restart after {down:?}")
            }
            Fault::HubPause { pause } => write!(f, "SIGSTOP the hub for {pause:?}"),
            Fault::HubKill { down } => write!(f, "SIGKILL the hub, restart after {down:?}"),
            Fault::KafkaPause { pause } => write!(f, "SIGSTOP Kafka for {pause:?}"),
            Fault::KafkaKill { down } => write!(f, "SIGKILL Kafka, restart after {down:?}"),
            Fault::UplinkPause { uplink, pause } => {
                write!(f, "SIGSTOP uplink {uplink} for {pause:?}")
            }
            Fault::UplinkKill { uplink, down } => {
                write!(f, "SIGKILL uplink {uplink}, restart after {down:?}")
            }
            Fault::CutBeyondWindow { device, lose, cut } => write!(
                f,
                "soak-{device}'s leaf loses the hub's answers for {lose:?}, then is cut off for {cut:?} (> duplicate window {DUPLICATE_WINDOW:?})"
            ),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; then {:?} quiet", self.fault, self.gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_plans_one_schedule_and_a_round_has_every_kind_once() {
        assert_eq!(plan(7, None), plan(7, None));
        assert_ne!(plan(7, None), plan(8, None));
        let round = plan(7, None);
        assert_eq!(round.len() as u64, KINDS);
        let kinds: std::collections::HashSet<_> = round
            .iter()
            .map(|s| std::mem::discriminant(&s.fault))
            .collect();
        assert_eq!(kinds.len() as u64, KINDS);
    }

    #[test]
    fn a_long_soak_plans_faults_for_its_whole_length() {
        let steps = plan(3, Some(600));
        let planned: Duration = steps.iter().map(|s| s.fault.planned() + s.gap).sum();
        assert!(planned >= Duration::from_secs(600), "{planned:?}");
        assert!(steps.len() as u64 > 3 * KINDS, "{}", steps.len());
    }
}
