//! A [`VobizApi`] that counts every request in the metrics, so the code
//! making requests never has to carry the metrics around to count them.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::call::{Call, CallUuid};
use crate::metrics::Metrics;

use super::{Cdr, Error, Fetched, SpeakLegs, VobizApi};

/// Wraps an API client and counts each request under
/// `callwarden_api_requests_total` by endpoint and how it ended.
pub struct Metered<A> {
    inner: Arc<A>,
    metrics: Arc<Metrics>,
}

impl<A: VobizApi> Metered<A> {
    /// Every request through the result is counted in `metrics`.
    pub fn new(inner: Arc<A>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// Sends a request and counts its result under `endpoint`.
    async fn count<T>(
        &self,
        endpoint: &str,
        request: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let result = request.await;
        self.metrics.api_request(endpoint, &result);
        result
    }
}

impl<A: VobizApi> VobizApi for Metered<A> {
    fn auth_id(&self) -> &str {
        self.inner.auth_id()
    }

    async fn list_live(&self) -> Result<Fetched<Vec<CallUuid>>, Error> {
        self.count("list", self.inner.list_live()).await
    }

    async fn list_queued(&self) -> Result<Fetched<Vec<CallUuid>>, Error> {
        self.count("list", self.inner.list_queued()).await
    }

    async fn get_live(&self, uuid: &CallUuid) -> Result<Fetched<Call>, Error> {
        self.count("detail", self.inner.get_live(uuid)).await
    }

    async fn get_queued(&self, uuid: &CallUuid) -> Result<Fetched<Call>, Error> {
        self.count("detail", self.inner.get_queued(uuid)).await
    }

    async fn probe(&self, at: DateTime<Utc>) -> Result<Fetched<Result<(), Error>>, Error> {
        let result = self.inner.probe(at).await;
        // Counted by the status the answer carried, not by its arrival.
        match &result {
            Ok(fetched) => self.metrics.api_request("probe", &fetched.value),
            Err(error) => self.metrics.api_request::<()>("probe", &Err(error.clone())),
        }
        result
    }

    async fn reread(&self, uuid: &CallUuid, queued: bool) -> Result<Fetched<Call>, Error> {
        self.count("detail", self.inner.reread(uuid, queued)).await
    }

    async fn get_cdr(&self, uuid: &CallUuid) -> Result<Fetched<Cdr>, Error> {
        self.count("cdr", self.inner.get_cdr(uuid)).await
    }

    async fn hangup(&self, uuid: &CallUuid) -> Result<Fetched<()>, Error> {
        self.count("hangup", self.inner.hangup(uuid)).await
    }

    async fn speak(
        &self,
        uuid: &CallUuid,
        text: &str,
        legs: SpeakLegs,
    ) -> Result<Fetched<()>, Error> {
        self.count("speak", self.inner.speak(uuid, text, legs))
            .await
    }
}
