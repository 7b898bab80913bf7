//! The shared SPI conformance suites, run against a single Redis and a Redis Cluster.
//!
//! Needs `MPUSH_TEST_REDIS` (host:port) and `MPUSH_TEST_REDIS_CLUSTER` (comma-separated
//! host:port seeds). The tests are `#[ignore]`d so that plain `cargo test` lists them as ignored;
//! `scripts/test-all.sh` starts the servers and runs them with `--include-ignored`, and a test
//! whose variable is unset then fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use mpush::spi::conformance;
use mpush::spi::{CacheManager, MQClient};
use mpush_spi_redis::{RedisCache, RedisMQ, RedisSettings};

async fn cache_conforms(settings: RedisSettings, name: &str) {
    let cache: Arc<dyn CacheManager> = Arc::new(RedisCache::connect_with(&settings).await.unwrap());
    conformance::cache_manager(cache, &common::prefix(name)).await;
}

async fn mq_conforms(settings: RedisSettings, name: &str) {
    // Two handles = two connections, as two server nodes would have.
    let a: Arc<dyn MQClient> = Arc::new(RedisMQ::connect_with(&settings).await.unwrap());
    let b: Arc<dyn MQClient> = Arc::new(RedisMQ::connect_with(&settings).await.unwrap());
    conformance::mq_client(a, b, &common::prefix(name)).await;
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_manager_conforms_single() {
    cache_conforms(common::single(), "cache-single").await;
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_manager_conforms_cluster() {
    cache_conforms(common::cluster(), "cache-cluster").await;
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_watch_conforms_single() {
    let settings = common::single();
    let cache: Arc<dyn CacheManager> = Arc::new(RedisCache::connect_with(&settings).await.unwrap());
    conformance::cache_watch(cache, &common::prefix("watch-single")).await;
}

/// Tracking is per cluster node: the cluster handle says it cannot watch, and the server
/// then reads every route.
#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_watch_is_unsupported_on_a_cluster() {
    let cache = RedisCache::connect_with(&common::cluster()).await.unwrap();
    let watch = Arc::new(conformance::RecordingWatch::default());
    let id = cache.watch_prefix("mp:ur:", watch.clone()).await.unwrap();
    assert!(id.is_none(), "a cluster handle claimed to watch keys");
    assert_eq!(watch.transitions(), (0, 0));
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_client_conforms_single_two_nodes() {
    mq_conforms(common::single(), "mq-single").await;
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_client_conforms_single_one_handle() {
    let settings = common::single();
    let a: Arc<dyn MQClient> = Arc::new(RedisMQ::connect_with(&settings).await.unwrap());
    conformance::mq_client(a.clone(), a, &common::prefix("mq-one")).await;
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_client_conforms_cluster_two_nodes() {
    mq_conforms(common::cluster(), "mq-cluster").await;
}
