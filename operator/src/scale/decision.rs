//! The pure scale-to-zero decision (docs/scale-to-zero.md, "How it works").

use std::fmt;
use std::time::{Duration, SystemTime};

/// Time a ready pod must have been observed before the activator slice is
/// removed, so that a pod crashing right after Ready does not flap routing.
pub const SLICE_REMOVAL_HYSTERESIS: Duration = Duration::from_secs(1);

/// Where a scale-to-zero app is (`status.scaleToZero.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Pods serve directly; the activator is not in the path.
    Serving,
    /// The activator is in the path and the last pods drain.
    ScalingDown,
    /// Zero pods; a request wakes the app.
    Idle,
    /// Requests are held while pods start.
    Waking,
}

impl State {
    /// The status string.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Serving => "Serving",
            State::ScalingDown => "ScalingDown",
            State::Idle => "Idle",
            State::Waking => "Waking",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an idle app is not scaled down, or why the activator is not used
/// (`status.scaleToZero.reason` and the `ScaleToZeroReady` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No ready activator pod: never route to, nor scale down behind, nothing (I2, I3).
    ActivatorUnavailable,
    /// No activity signal yet: idleness cannot be told from blindness (I3).
    ActivityUnknown,
    /// An activator holds requests for the app (I3).
    DemandActive,
    /// The dataplane did not route the probe through the activator slice (I3).
    DataplaneProbeFailed,
    /// The activator port range is full.
    PortsExhausted,
    /// `spec.replicas` is 0: the user stopped the app, so it is never woken.
    ReplicasZero,
}

impl Refusal {
    /// The reason string (a condition reason: CamelCase).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ActivatorUnavailable => "ActivatorUnavailable",
            Refusal::ActivityUnknown => "ActivityUnknown",
            Refusal::DemandActive => "DemandActive",
            Refusal::DataplaneProbeFailed => "DataplaneProbeFailed",
            Refusal::PortsExhausted => "PortsExhausted",
            Refusal::ReplicasZero => "ReplicasZero",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of the dataplane probe for the app's current port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Probe {
    /// Not run yet for this port.
    #[default]
    NotRun,
    /// A `Spindle-Probe` request to the ClusterIP was answered by the activator.
    Passed,
    /// It was not: the dataplane ignores the activator slice.
    Failed,
}

/// One write, to be performed in the order returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Server-side apply the `<app>-activator` EndpointSlice.
    ApplyActivatorSlice,
    /// Send the dataplane probe; record the result as [`Inputs::probe`] and
    /// stop here if it fails (the next decision removes the slice).
    RunDataplaneProbe,
    /// Patch `deployments/scale` to 0 (only after the slice is in place).
    ScaleToZero,
    /// Patch `deployments/scale` from 0 to this count (JSON patch with a
    /// `test /spec/replicas == 0`, so concurrent wakers are idempotent).
    Wake(i32),
    /// Delete the `<app>-activator` EndpointSlice.
    DeleteActivatorSlice,
}

/// Everything the decision depends on, observed by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// `spec.scaleToZero.enabled` (false also when the settings were invalid).
    pub enabled: bool,
    /// Replicas the app runs with while serving (`spec.replicas`, default 1; an
    /// HPA's minimum when autoscaled). 0 means the user stopped the app.
    pub serving_replicas: i32,
    /// Ready pod endpoints in kcm's EndpointSlices of the Service.
    pub ready_pods: u32,
    /// Pods of the app that still exist (including terminating ones).
    pub existing_pods: u32,
    /// The Deployment's `spec.replicas`.
    pub deployment_replicas: i32,
    /// Some activator renewed the demand Lease within its duration.
    pub demand_active: bool,
    /// Pending requests reported in the demand Lease (wake sizing).
    pub pending: u32,
    /// Latest of: last request seen by an activator or reported by the app,
    /// last wake, the app's creation. `None` = nothing known.
    pub last_activity: Option<SystemTime>,
    /// An activity signal is flowing for this app.
    pub activity_signal_known: bool,
    /// Ready activator pods.
    pub ready_activators: u32,
    /// The `<app>-activator` slice exists (observed or just written).
    pub slice_present: bool,
    /// The app has an activator port.
    pub port_assigned: bool,
    /// Dataplane probe result for the current port.
    pub probe: Probe,
    /// When the operator first observed `ready_pods ≥ 1` in this streak.
    pub ready_since: Option<SystemTime>,
    /// The idle timeout.
    pub idle_timeout: Duration,
    /// When the present `<app>-activator` slice was applied (its creation
    /// time); `None` when absent or unknown.
    pub slice_since: Option<SystemTime>,
    /// Activity window: once idle, the slice joins the pods' endpoints for
    /// this long before the scale-down, so that warm traffic the activator now
    /// receives (and proxies to the pods) shows up as activity. Zero skips it.
    pub observe_window: Duration,
    /// The current time.
    pub now: SystemTime,
}

/// What to do, and what to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Status state; `None` when scale to zero is off or the user stopped the app.
    pub state: Option<State>,
    /// Writes, in order.
    pub actions: Vec<Action>,
    /// Why the app is not (going) to zero although it would otherwise.
    pub refusal: Option<Refusal>,
    /// Decide again after this long even without an event.
    pub requeue_after: Option<Duration>,
}

/// Replicas to wake to: at least one and at least the serving count.
fn wake_replicas(inputs: &Inputs) -> i32 {
    inputs.serving_replicas.max(1)
}

/// The decision. Invariants (unit-tested over every input combination):
///
/// - **I1** `enabled ∧ serving_replicas > 0 ∧ ready_pods == 0 ∧ ready_activators > 0 ∧ port` ⇒
///   the slice is present after the actions.
/// - **I2** `ready_activators == 0` ⇒ the slice is never applied.
/// - **I3** scale to 0 only when the activity signal is known, an activator
///   is ready, no demand is active, the probe did not fail, the port is
///   assigned and `now − last_activity ≥ idle_timeout`; and the slice is
///   applied before (or already present).
pub fn decide(i: &Inputs) -> Decision {
    let mut actions = Vec::new();
    let activators = i.ready_activators > 0;

    if !i.enabled || i.serving_replicas <= 0 {
        // Off, or stopped by the user: the activator leaves the path and the
        // app is never woken. Deployment replicas follow the spec as usual.
        if i.slice_present {
            actions.push(Action::DeleteActivatorSlice);
        }
        let refusal = (i.enabled && i.serving_replicas <= 0).then_some(Refusal::ReplicasZero);
        return Decision {
            state: None,
            actions,
            refusal,
            requeue_after: None,
        };
    }

    // The slice with its routing-relevant guards (I2; without a port there is nothing to route to).
    let can_route = activators && i.port_assigned;
    let mut slice = i.slice_present;
    if !activators && i.slice_present {
        // Zero endpoints → fast REJECT rather than a hang.
        actions.push(Action::DeleteActivatorSlice);
        slice = false;
    }
    let ensure_slice = |actions: &mut Vec<Action>, slice: &mut bool| {
        if can_route && !*slice {
            actions.push(Action::ApplyActivatorSlice);
            *slice = true;
        }
    };

    if i.ready_pods == 0 {
        // I1: hold requests instead of rejecting them (zero, waking, crash loop, rollout).
        ensure_slice(&mut actions, &mut slice);
        let refusal = if !activators {
            Some(Refusal::ActivatorUnavailable)
        } else if !i.port_assigned {
            Some(Refusal::PortsExhausted)
        } else {
            None
        };
        if i.deployment_replicas == 0 {
            if i.demand_active || !activators {
                // Demand, or no activator to hold requests: bring the app up
                // so it is reachable directly.
                actions.push(Action::Wake(wake_replicas(i)));
                return Decision {
                    state: Some(State::Waking),
                    actions,
                    refusal,
                    requeue_after: None,
                };
            }
            let state = if i.existing_pods > 0 {
                State::ScalingDown
            } else {
                State::Idle
            };
            return Decision {
                state: Some(state),
                actions,
                refusal,
                requeue_after: None,
            };
        }
        return Decision {
            state: Some(State::Waking),
            actions,
            refusal,
            requeue_after: None,
        };
    }

    // At least one ready pod.
    if i.deployment_replicas == 0 {
        // Last pods draining after a scale-down. Keep the slice; new demand
        // needs a new pod (a terminating one cannot be revived).
        ensure_slice(&mut actions, &mut slice);
        if i.demand_active {
            actions.push(Action::Wake(wake_replicas(i)));
            return Decision {
                state: Some(State::Waking),
                actions,
                refusal: None,
                requeue_after: None,
            };
        }
        return Decision {
            state: Some(State::ScalingDown),
            actions,
            refusal: None,
            requeue_after: None,
        };
    }

    // Serving. Would it be idle?
    let idle_for = i
        .last_activity
        .map(|t| i.now.duration_since(t).unwrap_or_default());
    let refusal = if !activators {
        Some(Refusal::ActivatorUnavailable)
    } else if !i.activity_signal_known || idle_for.is_none() {
        Some(Refusal::ActivityUnknown)
    } else if !i.port_assigned {
        Some(Refusal::PortsExhausted)
    } else if i.probe == Probe::Failed {
        Some(Refusal::DataplaneProbeFailed)
    } else if i.demand_active {
        Some(Refusal::DemandActive)
    } else {
        None
    };
    let idle = idle_for.is_some_and(|d| d >= i.idle_timeout);

    if refusal.is_none() && idle {
        if !i.observe_window.is_zero() {
            // Observe first: with the slice beside the pods, new connections
            // reach the activator too, so traffic the activator cannot see
            // otherwise (warm requests go straight to pods) becomes activity.
            let observed = match (slice, i.slice_since) {
                (true, Some(since)) => i.now.duration_since(since).unwrap_or_default(),
                _ => Duration::ZERO,
            };
            if observed < i.observe_window {
                ensure_slice(&mut actions, &mut slice);
                return Decision {
                    state: Some(State::Serving),
                    actions,
                    refusal: None,
                    requeue_after: Some(i.observe_window - observed),
                };
            }
        }
        ensure_slice(&mut actions, &mut slice);
        if i.probe != Probe::Passed {
            actions.push(Action::RunDataplaneProbe);
        }
        actions.push(Action::ScaleToZero);
        return Decision {
            state: Some(State::ScalingDown),
            actions,
            refusal: None,
            requeue_after: None,
        };
    }

    // Stay serving: the slice goes once a ready pod has been seen long enough.
    let mut requeue_after = idle_for
        .filter(|_| refusal.is_none())
        .map(|d| i.idle_timeout.saturating_sub(d));
    let mut state = State::Serving;
    if slice {
        let ready_for = i
            .ready_since
            .map(|t| i.now.duration_since(t).unwrap_or_default())
            .unwrap_or_default();
        if ready_for >= SLICE_REMOVAL_HYSTERESIS {
            actions.push(Action::DeleteActivatorSlice);
        } else {
            state = State::Waking;
            requeue_after = Some(SLICE_REMOVAL_HYSTERESIS - ready_for);
        }
    }
    Decision {
        state: Some(state),
        actions,
        refusal,
        requeue_after,
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
