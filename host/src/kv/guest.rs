//! The guest-facing side of key-value state: `wasi:keyvalue` 0.2.0-draft
//! (`store`, `atomics`, `batch`) and `wasm-host:app/keyvalue-cas`, bound
//! from `wit/` and served by an app's [`Keyvalue`].
//!
//! This module only translates between WIT and [`Bucket`] calls; the checks
//! and the storage are the parent module's.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::{Bucket, Keyvalue, KvError, KvFuture, KvResult};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasm-host:app/keyvalue",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::kv::Bucket,
        },
    });
}

use generated::wasi::keyvalue::{atomics, batch, store};
use generated::wasm_host::app::keyvalue_cas;

/// What one store's key-value calls work on: the app's buckets and the
/// store's resource table, where open buckets live.
pub struct KvView<'a> {
    kv: &'a Keyvalue,
    table: &'a mut ResourceTable,
}

impl<'a> KvView<'a> {
    /// A view over `kv`, keeping open buckets in `table`.
    pub fn new(kv: &'a Keyvalue, table: &'a mut ResourceTable) -> Self {
        Self { kv, table }
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<&Bucket> {
        Ok(self.table.get(bucket)?)
    }
}

/// Adds every key-value interface to `linker`; `view` picks the view out of
/// a store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, view)?;
    atomics::add_to_linker::<T, HasKv>(linker, view)?;
    batch::add_to_linker::<T, HasKv>(linker, view)?;
    keyvalue_cas::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// The guest's view of a refusal or a failure.
fn to_guest(e: KvError) -> store::Error {
    store::Error::Other(e.0)
}

/// Waits for a call the bucket accepted, or passes on its refusal.
async fn finish<T>(call: KvResult<KvFuture<T>>) -> wasmtime::Result<Result<T, store::Error>> {
    Ok(match call {
        Ok(pending) => pending.await.map_err(to_guest),
        Err(refused) => Err(to_guest(refused)),
    })
}

type GuestResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> GuestResult<Resource<Bucket>> {
        match self.kv.open(&identifier).await {
            Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
            Err(refused) => Ok(Err(to_guest(refused))),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<Option<Vec<u8>>> {
        finish(self.bucket(&bucket)?.get(key)).await
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> GuestResult<()> {
        finish(self.bucket(&bucket)?.set(key, value)).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<()> {
        finish(self.bucket(&bucket)?.delete(key)).await
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<bool> {
        finish(self.bucket(&bucket)?.exists(key)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> GuestResult<store::KeyResponse> {
        let page = finish(Ok(self.bucket(&bucket)?.list_keys(cursor))).await?;
        Ok(page.map(|(keys, cursor)| store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> GuestResult<u64> {
        finish(self.bucket(&bucket)?.increment(key, delta)).await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> GuestResult<Vec<Option<(String, Vec<u8>)>>> {
        let names = keys.clone();
        let values = finish(self.bucket(&bucket)?.get_many(keys)).await?;
        Ok(values.map(|values| {
            names
                .into_iter()
                .zip(values)
                .map(|(key, value)| value.map(|v| (key, v)))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> GuestResult<()> {
        finish(self.bucket(&bucket)?.set_many(key_values)).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> GuestResult<()> {
        finish(self.bucket(&bucket)?.delete_many(keys)).await
    }
}

impl keyvalue_cas::Host for KvView<'_> {
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> GuestResult<bool> {
        finish(self.bucket(&bucket)?.compare_and_swap(key, expected, new)).await
    }
}
