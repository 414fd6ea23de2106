//! Where registry pulls meet apps: reload an app from an `oci://`
//! reference, and the `--watch-tag` poll that reloads when a tag moves.
//!
//! A pull that fails changes nothing: the error is logged and returned, and
//! the live version keeps serving. This module only pulls and asks the app
//! to reload; how a reload works is the app's business.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::rollout::CanaryPlan;
use crate::app::{App, ReloadOutcome};
use crate::oci::{Puller, Reference};

/// Pulls `reference` and reloads `app` with it, or starts it as a canary.
pub async fn reload(
    app: &App,
    puller: &Puller,
    reference: &Reference,
    canary: Option<CanaryPlan>,
) -> Result<ReloadOutcome, String> {
    let pulled = puller.pull(reference).await.map_err(|e| {
        tracing::warn!(app = %app.name(), "pull refused: {e}");
        e.to_string()
    })?;
    let as_canary = canary.is_some();
    let outcome = match canary {
        Some(plan) => app.start_canary(Some(pulled.path), plan).await,
        None => app.reload(Some(pulled.path)).await,
    }
    .map_err(|e| e.to_string())?;
    if !as_canary {
        puller.remember(app.name(), &pulled.reference);
    }
    Ok(outcome)
}

/// What a reload naming no component pulls again: the tag the app was last
/// pulled by, if it was pulled by one.
pub fn retag(app: &App, puller: &Puller) -> Option<Reference> {
    let origin = puller.origin(app.name())?;
    origin.tag.is_some().then_some(Reference {
        digest: None,
        ..origin
    })
}

/// Asks the registry about once per `every` whether the tag `app` was
/// pulled by points elsewhere now, and reloads when it does; until `stop`.
pub fn watch_tag(app: Arc<App>, puller: Arc<Puller>, every: Duration, stop: CancellationToken) {
    tracing::info!(app = %app.name(), every = %humantime::format_duration(every), "watching the tag for new digests");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(jittered(every)) => {}
            }
            // The tag of the latest pull: a reload to another tag moves the
            // watch along with it.
            let Some(tag) = retag(&app, &puller) else {
                continue;
            };
            let pinned = puller.origin(app.name()).and_then(|r| r.digest);
            match puller.resolve(&tag).await {
                Ok(digest) if Some(&digest) == pinned.as_ref() => {}
                Ok(digest) => {
                    tracing::info!(app = %app.name(), reference = %tag, %digest, "the tag moved: reloading");
                    // Logged by `reload` and the app, refused or not.
                    let _ = reload(&app, &puller, &tag.pinned(&digest), None).await;
                }
                Err(e) => {
                    tracing::warn!(app = %app.name(), "cannot check the tag: {e}; asking again later")
                }
            }
        }
    });
}

/// `every`, give or take a quarter, so hosts started together drift apart.
fn jittered(every: Duration) -> Duration {
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    let fraction = (seed % 10_000) as f64 / 10_000.0;
    every.mul_f64(0.75 + 0.5 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter_and_varies() {
        let every = Duration::from_secs(40);
        let draws: Vec<Duration> = (0..50).map(|_| jittered(every)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(30) && *d <= Duration::from_secs(50))
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "no jitter: {draws:?}");
    }
}
