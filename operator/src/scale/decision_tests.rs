use super::*;

const IDLE: Duration = Duration::from_secs(120);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn base() -> Inputs {
    Inputs {
        enabled: true,
        serving_replicas: 1,
        ready_pods: 1,
        existing_pods: 1,
        deployment_replicas: 1,
        demand_active: false,
        pending: 0,
        last_activity: Some(t0() - Duration::from_secs(10)),
        activity_signal_known: true,
        ready_activators: 2,
        slice_present: false,
        port_assigned: true,
        probe: Probe::Passed,
        ready_since: Some(t0() - Duration::from_secs(600)),
        idle_timeout: IDLE,
        slice_since: None,
        observe_window: Duration::ZERO,
        now: t0(),
    }
}

/// Every combination of small input domains (~210k cases).
fn all_inputs() -> impl Iterator<Item = Inputs> {
    let secs = |s: u64| Some(t0() - Duration::from_secs_f64(s as f64 / 10.0));
    let mut out = Vec::new();
    for enabled in [false, true] {
        for serving_replicas in [0, 1, 3] {
            for ready_pods in [0, 1, 2] {
                for extra_pods in [0, 1, 2] {
                    for deployment_replicas in [0, 1, 3] {
                        for demand_active in [false, true] {
                            for last_activity in [None, secs(100), secs(2000)] {
                                for activity_signal_known in [false, true] {
                                    for ready_activators in [0, 1, 2] {
                                        for slice_present in [false, true] {
                                            for port_assigned in [false, true] {
                                                for probe in
                                                    [Probe::NotRun, Probe::Passed, Probe::Failed]
                                                {
                                                    for ready_since in [None, secs(5), secs(50)] {
                                                        out.push(Inputs {
                                                            enabled,
                                                            serving_replicas,
                                                            ready_pods,
                                                            existing_pods: ready_pods + extra_pods,
                                                            deployment_replicas,
                                                            demand_active,
                                                            pending: u32::from(demand_active) * 10,
                                                            last_activity,
                                                            activity_signal_known,
                                                            ready_activators,
                                                            slice_present,
                                                            port_assigned,
                                                            probe,
                                                            ready_since,
                                                            idle_timeout: IDLE,
                                                            slice_since: None,
                                                            observe_window: Duration::ZERO,
                                                            now: t0(),
                                                        });
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out.into_iter()
}

/// Whether the slice exists after performing `actions` from `present`.
fn slice_after(present: bool, actions: &[Action]) -> bool {
    actions.iter().fold(present, |s, a| match a {
        Action::ApplyActivatorSlice => true,
        Action::DeleteActivatorSlice => false,
        _ => s,
    })
}

#[test]
fn invariants_hold_for_every_input() {
    let mut checked = 0usize;
    let mut scale_downs = 0usize;
    let mut wakes = 0usize;
    for i in all_inputs() {
        let d = decide(&i);
        let a = &d.actions;
        let ctx = || format!("{i:#?}\n→ {d:#?}");

        // I1: no ready pod, an activator ready, a port → requests are held.
        if i.enabled
            && i.serving_replicas > 0
            && i.ready_pods == 0
            && i.ready_activators > 0
            && i.port_assigned
        {
            assert!(slice_after(i.slice_present, a), "I1 violated\n{}", ctx());
        }
        // I2: never add the slice without a ready activator.
        if i.ready_activators == 0 {
            assert!(
                !a.contains(&Action::ApplyActivatorSlice),
                "I2 violated\n{}",
                ctx()
            );
        }
        // I3: scale down only when safe, and behind the slice.
        if let Some(pos) = a.iter().position(|x| *x == Action::ScaleToZero) {
            scale_downs += 1;
            assert!(i.enabled && i.serving_replicas > 0, "{}", ctx());
            assert!(
                i.activity_signal_known && i.ready_activators > 0 && !i.demand_active,
                "I3 violated\n{}",
                ctx()
            );
            assert!(
                i.probe != Probe::Failed && i.port_assigned,
                "I3 violated\n{}",
                ctx()
            );
            let idle_for = i
                .now
                .duration_since(i.last_activity.expect("activity known"))
                .unwrap();
            assert!(idle_for >= i.idle_timeout, "I3: not idle\n{}", ctx());
            assert!(
                slice_after(i.slice_present, &a[..pos]),
                "I3: slice not in place before scale-down\n{}",
                ctx()
            );
            if i.probe != Probe::Passed {
                assert_eq!(
                    a[..pos].last(),
                    Some(&Action::RunDataplaneProbe),
                    "probe must run first\n{}",
                    ctx()
                );
            }
            assert_eq!(d.state, Some(State::ScalingDown));
        }
        // Removing the slice while nothing serves would drop requests.
        if a.contains(&Action::DeleteActivatorSlice)
            && i.enabled
            && i.serving_replicas > 0
            && i.ready_activators > 0
        {
            assert!(
                i.ready_pods > 0 && i.deployment_replicas > 0,
                "slice removed at zero\n{}",
                ctx()
            );
            let ready_for = i
                .now
                .duration_since(i.ready_since.expect("ready observed"))
                .unwrap();
            assert!(
                ready_for >= SLICE_REMOVAL_HYSTERESIS,
                "slice removed before hysteresis\n{}",
                ctx()
            );
        }
        // Wakes: only from 0, only with a reason, at least one replica.
        for x in a {
            if let Action::Wake(n) = x {
                wakes += 1;
                assert!(*n >= 1 && *n >= i.serving_replicas, "{}", ctx());
                assert!(
                    i.enabled && i.serving_replicas > 0 && i.deployment_replicas == 0,
                    "{}",
                    ctx()
                );
                assert!(
                    i.demand_active || i.ready_activators == 0,
                    "wake without demand\n{}",
                    ctx()
                );
            }
        }
        // Demand at zero always wakes.
        if i.enabled && i.serving_replicas > 0 && i.deployment_replicas == 0 && i.demand_active {
            assert!(
                a.iter().any(|x| matches!(x, Action::Wake(_))),
                "demand ignored\n{}",
                ctx()
            );
        }
        // Contradictions.
        assert!(
            !(a.contains(&Action::ScaleToZero) && a.iter().any(|x| matches!(x, Action::Wake(_)))),
            "{}",
            ctx()
        );
        assert!(
            !(a.contains(&Action::ApplyActivatorSlice)
                && a.contains(&Action::DeleteActivatorSlice)),
            "{}",
            ctx()
        );
        // Off or stopped: nothing but removing the slice.
        if !i.enabled || i.serving_replicas == 0 {
            assert!(
                a.iter().all(|x| *x == Action::DeleteActivatorSlice),
                "{}",
                ctx()
            );
            assert_eq!(d.state, None);
            assert!(!slice_after(i.slice_present, a));
        }
        // A state is reported whenever scale to zero is active.
        if i.enabled && i.serving_replicas > 0 {
            assert!(d.state.is_some(), "{}", ctx());
        }
        checked += 1;
    }
    assert!(checked > 200_000);
    // The domains do reach both switches.
    assert!(scale_downs > 100 && wakes > 1000, "{scale_downs} {wakes}");
}

#[test]
fn serving_and_not_idle_requeues_at_the_idle_deadline() {
    let d = decide(&base());
    assert_eq!(d.state, Some(State::Serving));
    assert!(d.actions.is_empty());
    assert_eq!(d.refusal, None);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(110)));
}

#[test]
fn idle_app_scales_down_behind_the_slice_after_the_probe() {
    let i = Inputs {
        last_activity: Some(t0() - IDLE),
        probe: Probe::NotRun,
        ..base()
    };
    assert_eq!(
        decide(&i).actions,
        vec![
            Action::ApplyActivatorSlice,
            Action::RunDataplaneProbe,
            Action::ScaleToZero
        ]
    );
    let i = Inputs {
        probe: Probe::Passed,
        slice_present: true,
        ..i
    };
    assert_eq!(decide(&i).actions, vec![Action::ScaleToZero]);
}

#[test]
fn refusals_are_reported_with_their_reason() {
    let idle = Inputs {
        last_activity: Some(t0() - IDLE * 2),
        ..base()
    };
    let cases = [
        (
            Inputs {
                ready_activators: 0,
                ..idle.clone()
            },
            Refusal::ActivatorUnavailable,
        ),
        (
            Inputs {
                activity_signal_known: false,
                ..idle.clone()
            },
            Refusal::ActivityUnknown,
        ),
        (
            Inputs {
                last_activity: None,
                ..idle.clone()
            },
            Refusal::ActivityUnknown,
        ),
        (
            Inputs {
                port_assigned: false,
                ..idle.clone()
            },
            Refusal::PortsExhausted,
        ),
        (
            Inputs {
                probe: Probe::Failed,
                ..idle.clone()
            },
            Refusal::DataplaneProbeFailed,
        ),
        (
            Inputs {
                demand_active: true,
                ..idle.clone()
            },
            Refusal::DemandActive,
        ),
    ];
    for (i, want) in cases {
        let d = decide(&i);
        assert_eq!(d.refusal, Some(want));
        assert_eq!(d.state, Some(State::Serving));
        assert!(!d.actions.contains(&Action::ScaleToZero));
    }
    // A failed probe takes the slice back out.
    let d = decide(&Inputs {
        probe: Probe::Failed,
        slice_present: true,
        ..idle
    });
    assert_eq!(d.actions, vec![Action::DeleteActivatorSlice]);
}

#[test]
fn one_full_cycle() {
    // Scale-down written: replicas 0, pod draining (still ready in kcm's slice).
    let draining = Inputs {
        deployment_replicas: 0,
        slice_present: true,
        last_activity: Some(t0() - IDLE),
        ..base()
    };
    let d = decide(&draining);
    assert_eq!(
        (d.state, d.actions.clone()),
        (Some(State::ScalingDown), vec![])
    );
    // Pod not ready but still terminating, then gone.
    let terminating = Inputs {
        ready_pods: 0,
        ..draining.clone()
    };
    assert_eq!(decide(&terminating).state, Some(State::ScalingDown));
    let idle = Inputs {
        existing_pods: 0,
        ..terminating
    };
    let d = decide(&idle);
    assert_eq!((d.state, d.actions.clone()), (Some(State::Idle), vec![]));
    // A request arrives: the activator renews the demand Lease.
    let demand = Inputs {
        demand_active: true,
        pending: 3,
        ..idle
    };
    let d = decide(&demand);
    assert_eq!(
        (d.state, d.actions.clone()),
        (Some(State::Waking), vec![Action::Wake(1)])
    );
    // Deployment patched, pod starting: keep holding.
    let starting = Inputs {
        deployment_replicas: 1,
        existing_pods: 1,
        ready_since: None,
        ..demand
    };
    let d = decide(&starting);
    assert_eq!((d.state, d.actions.clone()), (Some(State::Waking), vec![]));
    // Ready observed just now: hysteresis.
    let ready = Inputs {
        ready_pods: 1,
        ready_since: Some(t0()),
        last_activity: Some(t0()),
        ..starting
    };
    let d = decide(&ready);
    assert_eq!(
        (d.state, d.actions.clone(), d.requeue_after),
        (Some(State::Waking), vec![], Some(SLICE_REMOVAL_HYSTERESIS))
    );
    // After the hysteresis the activator leaves the path.
    let later = Inputs {
        now: t0() + SLICE_REMOVAL_HYSTERESIS,
        demand_active: false,
        ..ready
    };
    let d = decide(&later);
    assert_eq!(
        (d.state, d.actions),
        (Some(State::Serving), vec![Action::DeleteActivatorSlice])
    );
}

#[test]
fn crash_after_ready_puts_the_activator_back() {
    let crashed = Inputs {
        ready_pods: 0,
        ready_since: None,
        ..base()
    };
    let d = decide(&crashed);
    assert_eq!(
        (d.state, d.actions),
        (Some(State::Waking), vec![Action::ApplyActivatorSlice])
    );
}

#[test]
fn activator_loss_wakes_idle_apps_and_empties_the_path() {
    let idle = Inputs {
        ready_pods: 0,
        existing_pods: 0,
        deployment_replicas: 0,
        slice_present: true,
        ready_activators: 0,
        serving_replicas: 2,
        ..base()
    };
    let d = decide(&idle);
    assert_eq!(
        d.actions,
        vec![Action::DeleteActivatorSlice, Action::Wake(2)]
    );
    assert_eq!(d.refusal, Some(Refusal::ActivatorUnavailable));
}

#[test]
fn manual_zero_and_disabled_leave_the_app_alone() {
    let stopped = Inputs {
        serving_replicas: 0,
        deployment_replicas: 0,
        ready_pods: 0,
        existing_pods: 0,
        demand_active: true,
        ..base()
    };
    let d = decide(&stopped);
    assert_eq!(
        (d.state, d.actions.clone(), d.refusal),
        (None, vec![], Some(Refusal::ReplicasZero))
    );
    let off = Inputs {
        enabled: false,
        slice_present: true,
        ..stopped
    };
    assert_eq!(decide(&off).actions, vec![Action::DeleteActivatorSlice]);
}

#[test]
fn observation_window_puts_the_slice_beside_the_pods_before_scaling_down() {
    let window = Duration::from_secs(20);
    let mut i = base();
    i.observe_window = window;
    i.last_activity = Some(t0() - IDLE);
    // Idle: the slice joins the pods' endpoints first; still Serving.
    let d = decide(&i);
    assert_eq!(d.actions, vec![Action::ApplyActivatorSlice]);
    assert_eq!(d.state, Some(State::Serving));
    assert_eq!(d.requeue_after, Some(window));
    // Halfway through the window: nothing to do but wait.
    i.slice_present = true;
    i.slice_since = Some(t0() - window / 2);
    let d = decide(&i);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.requeue_after, Some(window / 2));
    // A request seen through the activator during the window: stay, slice goes.
    let mut busy = i.clone();
    busy.last_activity = Some(t0() - Duration::from_secs(1));
    let d = decide(&busy);
    assert_eq!(d.actions, vec![Action::DeleteActivatorSlice]);
    assert_eq!(d.state, Some(State::Serving));
    // A quiet window: scale to zero behind the slice already in place.
    i.slice_since = Some(t0() - window);
    let d = decide(&i);
    assert_eq!(d.actions, vec![Action::ScaleToZero]);
    assert_eq!(d.state, Some(State::ScalingDown));
}
