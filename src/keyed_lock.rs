//! A lock per key (containerd's `kmutex`): concurrent work on the same key (a snapshot's chain id, an
//! image being pulled) runs once at a time, work on different keys in parallel.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Locks by key; entries disappear when nobody holds or waits for them.
#[derive(Debug)]
pub struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Weak<AsyncMutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    map.retain(|_, w| w.strong_count() > 0);
                    let m = Arc::new(AsyncMutex::new(()));
                    map.insert(key.clone(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = Arc::new(KeyedLocks::<u32>::default());
        let a = locks.lock(&1).await;
        let _b = locks.lock(&2).await; // A different key is free.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock(&1).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
    }
}
