//! Wasm glue: spin-sdk's `#[http_component]` over the pure [`crate::handle`], with the
//! `default` store of Spin's key-value API (`fermyon:spin/key-value@2.0.0`).

use crate::{Body, KvStore, StoreError, MAX_VALUE_BYTES};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error, Store};

/// Opens the store on first use, so requests that never touch it (405, bad key) do not.
struct SpinStore(Option<Store>);

impl SpinStore {
    fn store(&mut self) -> Result<&Store, StoreError> {
        if self.0.is_none() {
            self.0 = Some(Store::open_default().map_err(map_err)?);
        }
        Ok(self.0.as_ref().unwrap())
    }
}

fn map_err(e: Error) -> StoreError {
    match e {
        Error::NoSuchStore => StoreError::NoSuchStore,
        Error::AccessDenied => StoreError::AccessDenied,
        Error::StoreTableFull => StoreError::Other("store table full".into()),
        Error::Other(msg) => StoreError::Other(msg),
    }
}

impl KvStore for SpinStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store()?.get(key).map_err(map_err)
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store()?.set(key, value).map_err(map_err)
    }
    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        self.store()?.delete(key).map_err(map_err)
    }
}

#[http_component]
async fn handle(req: IncomingRequest) -> Response {
    let method = req.method().to_string();
    let path = req.path_with_query().unwrap_or_default();
    let body = if crate::wants_body(&method) {
        crate::body::read_body(req, MAX_VALUE_BYTES).await
    } else {
        Body::Skipped
    };
    let resp = crate::handle(&method, &path, body, &mut SpinStore(None));
    crate::body::to_spin_response(resp.status, resp.headers, resp.body)
}
