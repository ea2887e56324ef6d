//! The API's near cache (products kept in process in front of Redis, kept right by Redis's
//! invalidations: client-side caching on RESP3) against a private `redis-server`: a repeated
//! read is answered without Redis, a write elsewhere replaces the copy, this process reads its
//! own writes at once, a deleted key or a restarted Redis leaves no copy behind, and a server
//! that refuses tracking gets plain reads. A product read from Postgres is written back by a
//! put that rides on the next read, or goes alone when none comes.

use std::time::{Duration, Instant};

use aliexpress::cache::product_cache::Writer;
use aliexpress::cache::{CacheError, CachedDocument, ProductCache};
use aliexpress::domain::product::Product;
use uuid::Uuid;

use crate::helpers::wait_until;
use crate::resilience::{api_cache, app_on_redis, PrivateRedis};

/// The version the API's cache reads for `id` (`None`: absent).
async fn version(cache: &ProductCache, id: Uuid) -> Option<i64> {
    cache.get_document(id).await.expect("read").map(|d| d.version)
}

/// A product created through the API on `redis`, as Redis holds it.
async fn created(redis: &PrivateRedis, sku: &str) -> (crate::helpers::TestApp, Product) {
    let app = app_on_redis(redis).await;
    let p = app.create_product(sku, "Near lamp").await;
    let id: Uuid = p["id"].as_str().expect("id").parse().expect("uuid");
    let worker = ProductCache::new(&redis.url(), app.env.names.clone(), Duration::from_secs(3600)).expect("cache");
    let product = worker.get(id).await.expect("redis").expect("written through");
    (app, product)
}

fn next(p: &Product) -> Product {
    let mut n = p.clone();
    n.version += 1;
    n.title = format!("Near lamp v{}", n.version);
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_read_is_answered_in_process_and_a_write_elsewhere_replaces_it() {
    let redis = PrivateRedis::start().await;
    let (app, v1) = created(&redis, "NEAR-1").await;
    let id = v1.id;
    let api = api_cache(&redis.url(), &app.env.names);
    // Another process: the projection's cache, plain connections.
    let worker = ProductCache::new(&redis.url(), app.env.names.clone(), Duration::from_secs(3600)).expect("cache");
    let (_, other) = created(&redis, "NEAR-2").await;

    assert_eq!(api.near_entries(), Some(0));
    assert_eq!(version(&api, id).await, Some(v1.version));
    assert_eq!(api.near_entries(), Some(1), "the read kept a copy");

    // Redis stalled: the copy answers at once; a product not copied waits for Redis and
    // times out (the request path's 50 ms bound).
    redis.stop();
    let started = Instant::now();
    assert_eq!(version(&api, id).await, Some(v1.version));
    let cold = api.get_document(other.id).await;
    redis.resume();
    assert!(matches!(cold, Err(CacheError::Timeout)), "{cold:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Written by another process: Redis's invalidation replaces the copy.
    let v2 = next(&v1);
    worker.put_many(&[&v2], Writer::Projection).await.expect("put");
    let replaced = wait_until(Duration::from_secs(5), || async {
        version(&api, id).await == Some(v2.version)
    })
    .await;
    assert!(
        replaced,
        "the copy of version {} outlived a write elsewhere",
        v1.version
    );

    // This process's own writes are read back at once, every time.
    let mut current = v2;
    for _ in 0..50 {
        current = next(&current);
        assert!(api.put(&current).await.expect("write-through").applied);
        assert_eq!(
            version(&api, id).await,
            Some(current.version),
            "read after its own write"
        );
    }

    // Deleted in Redis: no copy is served once Redis says so.
    worker.evict(id).await.expect("evict");
    let gone = wait_until(Duration::from_secs(5), || async { version(&api, id).await.is_none() }).await;
    assert!(gone, "a copy outlived its key");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_redis_leaves_no_copy_behind() {
    let mut redis = PrivateRedis::start().await;
    let (app, v1) = created(&redis, "NEAR-3").await;
    let api = api_cache(&redis.url(), &app.env.names);
    assert_eq!(version(&api, v1.id).await, Some(v1.version));
    assert_eq!(api.near_entries(), Some(1));

    redis.kill();
    redis.spawn().await;
    // Empty now: the closed connection took its copies with it.
    let emptied = wait_until(Duration::from_secs(10), || async {
        matches!(api.get_document(v1.id).await, Ok(None))
    })
    .await;
    assert!(emptied, "the copy survived the restart");
    assert_eq!(api.near_entries(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_refuses_tracking_gets_plain_reads() {
    let redis = PrivateRedis::start().await;
    let (app, v1) = created(&redis, "NEAR-4").await;
    // A user that may not turn tracking on (a managed Redis may say the same).
    let admin = redis::Client::open(redis.url()).expect("client");
    let mut c = admin.get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "reader",
                "on",
                ">reader-pw",
                "~*",
                "&*",
                "+@all",
                "-client|tracking",
            ][..],
        )
        .query_async(&mut c)
        .await
        .expect("acl");
    let url = redis.url().replace("redis://", "redis://reader:reader-pw@");
    let api = api_cache(&url, &app.env.names);
    assert_eq!(
        version(&api, v1.id).await,
        Some(v1.version),
        "reads work without tracking"
    );
    assert_eq!(api.near_entries(), None, "no near cache without tracking");
    assert_eq!(version(&api, v1.id).await, Some(v1.version));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_through_put_rides_on_the_next_read_and_goes_alone_when_none_comes() {
    let redis = PrivateRedis::start().await;
    let (app, v1) = created(&redis, "RIDE-1").await;
    let worker = ProductCache::new(&redis.url(), app.env.names.clone(), Duration::from_secs(3600)).expect("cache");
    let stored = |id: Uuid| {
        let worker = worker.clone();
        async move { worker.get(id).await.expect("redis").map(|p| p.version) }
    };
    worker.evict(v1.id).await.expect("evict");

    // A linger no test outlives: only a read can carry the put.
    let api = api_cache(&redis.url(), &app.env.names).with_read_through_linger(Duration::from_secs(3600));
    api.put_later(v1.id, CachedDocument::of(&v1).expect("json"));
    assert_eq!(stored(v1.id).await, None, "the put waits for a read");
    assert_eq!(version(&api, Uuid::new_v4()).await, None, "a read of another product");
    assert_eq!(stored(v1.id).await, Some(v1.version), "carried by that read");

    // Carried or not, a put is versioned: an older state never replaces a newer one.
    let v2 = next(&v1);
    worker.put_many(&[&v2], Writer::Projection).await.expect("put");
    api.put_later(v1.id, CachedDocument::of(&v1).expect("json"));
    assert_eq!(version(&api, v1.id).await, Some(v2.version), "the read after it");
    assert_eq!(stored(v1.id).await, Some(v2.version));

    // The shipped linger, and no read: the put goes on its own.
    worker.evict(v1.id).await.expect("evict");
    let api = api_cache(&redis.url(), &app.env.names);
    api.put_later(v2.id, CachedDocument::of(&v2).expect("json"));
    let alone = wait_until(Duration::from_secs(5), || async {
        stored(v1.id).await == Some(v2.version)
    })
    .await;
    assert!(alone, "a put no read carried was never sent");
}
