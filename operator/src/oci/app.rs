//! Per-app image resolution: the one call the SpinApp reconciler makes
//! before building its model ([`resolve_app_image`]), and what it means for
//! the status (`ImageResolved` condition, `resolvedImage`, `imageFormat`).
//!
//! Rules:
//! - When `status.resolvedImage` was resolved from the current `spec.image`
//!   and the app has no refresh interval annotation, the status value is
//!   reused: no registry call (also across operator restarts).
//! - Otherwise the registry is asked (through the shared [`Resolver`] cache).
//! - On a registry error, an earlier digest for the same `spec.image` in the
//!   status is kept ([`ImageDecision::Stale`]): the Deployment is not
//!   touched, and transient errors are retried with backoff. A registry
//!   outage never takes a running app down.
//! - With no earlier digest, nothing is rolled out ([`ImageDecision::Failed`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use tracing::warn;

use super::reference::pinned_matches;
use super::{Error, ImageFormat, Keyring, Resolver, refresh_interval};
use crate::api::SpinApp;

/// Type of the status condition reporting image resolution.
pub const IMAGE_RESOLVED: &str = "ImageResolved";

/// A pinned image and its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppImage {
    /// Digest-pinned reference for the pod spec.
    pub image: String,
    /// Packaging format.
    pub format: ImageFormat,
}

/// What the reconciler should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageDecision {
    /// Resolution is disabled (`--resolve-images=false`): run `spec.image` as written.
    Disabled,
    /// Run this pinned image. `changed` is true when it differs from
    /// `status.resolvedImage` (first resolution, or a moved tag): announce it.
    Resolved {
        /// The image.
        image: AppImage,
        /// Whether it differs from the status.
        changed: bool,
    },
    /// The registry failed but the status holds a digest for this `spec.image`:
    /// keep running it (Deployment untouched) and retry if transient.
    Stale {
        /// The image from status.
        image: AppImage,
        /// Why it could not be refreshed.
        error: Error,
    },
    /// No runnable image: roll nothing out; report the error.
    Failed(Error),
}

impl ImageDecision {
    /// The image the pod spec should use, if any (`None` with `Disabled`
    /// means `spec.image`; with `Failed`, nothing may be rolled out).
    pub fn image(&self) -> Option<&AppImage> {
        match self {
            ImageDecision::Resolved { image, .. } | ImageDecision::Stale { image, .. } => {
                Some(image)
            }
            ImageDecision::Disabled | ImageDecision::Failed(_) => None,
        }
    }

    /// `(status, reason, message)` of the `ImageResolved` condition, or
    /// `None` when resolution is disabled.
    pub fn condition(&self) -> Option<(&'static str, String, String)> {
        match self {
            ImageDecision::Disabled => None,
            ImageDecision::Resolved { image, .. } => Some((
                "True",
                image.format.as_str().to_string(),
                format!("resolved to {} ({})", image.image, image.format),
            )),
            ImageDecision::Stale { image, error } => Some((
                "False",
                error.reason().to_string(),
                format!("{error}; still running {}", image.image),
            )),
            ImageDecision::Failed(error) => {
                Some(("False", error.reason().to_string(), error.to_string()))
            }
        }
    }

    /// The error to retry with backoff (transient registry errors only).
    pub fn retry_error(&self) -> Option<&Error> {
        match self {
            ImageDecision::Stale { error, .. } | ImageDecision::Failed(error)
                if error.is_transient() =>
            {
                Some(error)
            }
            _ => None,
        }
    }
}

/// The image from the app's status, if it was resolved from the current
/// `spec.image`.
pub fn image_from_status(app: &SpinApp) -> Option<AppImage> {
    let status = app.status.as_ref()?;
    let image = status.resolved_image.as_deref()?;
    let format = ImageFormat::parse(status.image_format.as_deref()?)?;
    pinned_matches(&app.spec.image, image).then(|| AppImage {
        image: image.to_string(),
        format,
    })
}

/// How long a healthy app may wait before its next reconcile: `resync`,
/// or the app's image refresh interval when that is shorter. Without this a
/// tag with a refresh interval would only be re-resolved at the resync
/// interval (an hour by default), whatever the annotation says.
pub fn requeue_after(app: &SpinApp, resync: Duration) -> Duration {
    match refresh_interval(app.metadata.annotations.as_ref()) {
        Ok(Some(refresh)) => refresh.min(resync),
        _ => resync,
    }
}

/// Decide which image the app runs. `resolver` is `None` when resolution is
/// disabled; `pull_secrets` are the app's `imagePullSecrets` that exist.
pub async fn resolve_app_image(
    resolver: Option<&Resolver>,
    app: &SpinApp,
    pull_secrets: &[Secret],
) -> ImageDecision {
    let Some(resolver) = resolver else {
        return ImageDecision::Disabled;
    };
    let refresh = refresh_interval(app.metadata.annotations.as_ref()).unwrap_or_else(|message| {
        warn!(app = ?app.metadata.name, %message, "ignoring the image refresh interval");
        None
    });
    let previous = image_from_status(app);
    if let (Some(image), None) = (&previous, refresh) {
        return ImageDecision::Resolved {
            image: image.clone(),
            changed: false,
        };
    }
    let (keyring, problems) = Keyring::from_secrets(pull_secrets);
    for problem in &problems {
        warn!(app = ?app.metadata.name, %problem, "unusable image pull secret");
    }
    match resolver.resolve(&app.spec.image, &keyring, refresh).await {
        Ok(resolved) => {
            let image = AppImage {
                image: resolved.image,
                format: resolved.format,
            };
            let changed = previous.as_ref() != Some(&image);
            ImageDecision::Resolved { image, changed }
        }
        Err(error) => match previous {
            Some(image) => ImageDecision::Stale { image, error },
            None => ImageDecision::Failed(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SpinAppSpec, SpinAppStatus};

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn app(image: &str, status: Option<(&str, &str)>) -> SpinApp {
        let mut app = SpinApp::new(
            "a",
            SpinAppSpec {
                executor: "containerd-shim-spin".into(),
                image: image.into(),
                ..Default::default()
            },
        );
        app.status = status.map(|(img, fmt)| SpinAppStatus {
            resolved_image: Some(img.into()),
            image_format: Some(fmt.into()),
            ..Default::default()
        });
        app
    }

    #[test]
    fn refresh_interval_shortens_the_requeue() {
        let hour = Duration::from_secs(3600);
        let mut a = app("ghcr.io/a/b:1", None);
        assert_eq!(requeue_after(&a, hour), hour);
        let ann = |v: &str| {
            Some(
                [(
                    super::super::IMAGE_REFRESH_INTERVAL_ANNOTATION.to_string(),
                    v.to_string(),
                )]
                .into(),
            )
        };
        a.metadata.annotations = ann("30s");
        assert_eq!(requeue_after(&a, hour), Duration::from_secs(30));
        assert_eq!(
            requeue_after(&a, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        // Invalid or below the minimum: ignored, as resolve_app_image does.
        a.metadata.annotations = ann("1s");
        assert_eq!(requeue_after(&a, hour), hour);
    }

    #[tokio::test]
    async fn disabled_runs_spec_image() {
        let d = resolve_app_image(None, &app("ghcr.io/a/b:1", None), &[]).await;
        assert_eq!(d, ImageDecision::Disabled);
        assert!(d.condition().is_none() && d.image().is_none());
    }

    #[tokio::test]
    async fn status_is_reused_without_registry_calls() {
        let resolver = Resolver::default();
        let pinned = format!("ghcr.io/a/b:1@{D}");
        let d = resolve_app_image(
            Some(&resolver),
            &app("ghcr.io/a/b:1", Some((&pinned, "SpinRegistryPush"))),
            &[],
        )
        .await;
        assert_eq!(d.image().unwrap().image, pinned);
        assert!(matches!(d, ImageDecision::Resolved { changed: false, .. }));
        assert_eq!(d.condition().unwrap().0, "True");
        assert_eq!(d.condition().unwrap().1, "SpinRegistryPush");
        assert_eq!(resolver.stats().fetches, 0);
    }

    #[tokio::test]
    async fn registry_errors_keep_the_status_image() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let image = format!("127.0.0.1:{port}/a:1");
        let pinned = format!("127.0.0.1:{port}/a:1@{D}");
        let resolver = Resolver::default();
        // A refresh interval forces a registry call, which fails.
        let mut a = app(&image, Some((&pinned, "WasmComponent")));
        a.metadata.annotations = Some(
            [(
                super::super::IMAGE_REFRESH_INTERVAL_ANNOTATION.to_string(),
                "1m".to_string(),
            )]
            .into(),
        );
        let d = resolve_app_image(Some(&resolver), &a, &[]).await;
        let ImageDecision::Stale { image: kept, error } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(kept.image, pinned);
        assert_eq!(error.reason(), "RegistryUnavailable");
        assert!(d.retry_error().is_some());
        assert_eq!(d.condition().unwrap().0, "False");
        // A changed spec.image does not match the status: nothing to keep.
        let d = resolve_app_image(
            Some(&resolver),
            &app(
                &format!("127.0.0.1:{port}/a:2"),
                Some((&pinned, "WasmComponent")),
            ),
            &[],
        )
        .await;
        assert!(matches!(d, ImageDecision::Failed(_)), "{d:?}");
        assert!(d.image().is_none());
    }
}
