package jwtauth

import (
	"sync"
	"time"
)

// tokenCache remembers tokens that passed every check, keyed by their
// SHA-256 (never the token itself, so a heap dump holds no usable bearer
// token), until exp+leeway. Sharding keeps the read lock of one shard from
// being every request's contention point.
type tokenCache struct {
	perShard int
	shards   [cacheShards]cacheShard
}

const cacheShards = 16

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]*cacheEntry
}

type cacheEntry struct {
	claims *Claims
	until  time.Time  // exp + leeway: the entry is never served after it
	key    *verifyKey // the key that verified it; the entry dies with the key
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{perShard: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]*cacheEntry)
	}
	return c
}

func (c *tokenCache) shard(h *[32]byte) *cacheShard { return &c.shards[h[0]%cacheShards] }

func (c *tokenCache) get(h *[32]byte) *cacheEntry {
	s := c.shard(h)
	s.mu.RLock()
	e := s.m[*h]
	s.mu.RUnlock()
	return e
}

func (c *tokenCache) put(h *[32]byte, e *cacheEntry, now time.Time) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*h]; !ok && len(s.m) >= c.perShard {
		// Evict expired entries first, else one at random (map order): a
		// random victim costs one re-verification, and needs no LRU list
		// updated under a write lock on every hit.
		evicted := false
		n := 0
		for k, old := range s.m {
			if !now.Before(old.until) {
				delete(s.m, k)
				evicted = true
			}
			if n++; n >= 8 {
				break
			}
		}
		if !evicted {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	s.m[*h] = e
}

func (c *tokenCache) remove(h *[32]byte) {
	s := c.shard(h)
	s.mu.Lock()
	delete(s.m, *h)
	s.mu.Unlock()
}

// retain drops every entry whose key is no longer in ks.
func (c *tokenCache) retain(ks *keySet) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if !ks.has(e.key) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
