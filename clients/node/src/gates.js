// Which requests count against which feature: a feature's `match` patterns as
// skene.gates() returns them ({ method, path }: `*` within one path segment, `**`
// across segments, `method` a name or '*'), the same rules as the Python middleware,
// and a brief per-database cache of the table.

import { gates as readGates } from './index.js';

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** The RegExp of a path glob. */
export function pathRegex(glob) {
  const parts = glob.split(/(\*\*|\*)/);
  const body = parts
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : escape(part)))
    .join('');
  return new RegExp(`^(?:${body})$`);
}

/** A gate (a row of skene.gates()) with its patterns compiled. */
export function compile(gate) {
  const rules = (gate.match || []).map((pattern) => ({
    method: String(pattern.method || '*').toUpperCase(),
    regex: pathRegex(pattern.path),
  }));
  return { ...gate, rules };
}

/** Whether a compiled gate matches a request's method and (decoded) path. */
export function matches(gate, method, path) {
  const upper = method.toUpperCase();
  return gate.rules.some(
    (rule) => (rule.method === '*' || rule.method === upper) && rule.regex.test(path),
  );
}

/** The gates of one read, in feature name order (every request is counted in that order). */
function table(rows) {
  const sorted = rows.map(compile).sort((a, b) => (a.feature < b.feature ? -1 : a.feature > b.feature ? 1 : 0));
  return {
    gates: sorted,
    matching: (method, path) => sorted.filter((gate) => matches(gate, method, path)),
    get: (feature) => sorted.find((gate) => gate.feature === feature) ?? null,
  };
}

const caches = new WeakMap();

/**
 * skene.gates() of this database, read at most every `ttl` seconds. A failed read
 * keeps the last good table (a gate keeps gating through a blip); with none, it throws
 * the SkeneError. Concurrent misses share one read.
 */
export async function gateTable(db, { ttl = 10, logger = console } = {}) {
  let cache = caches.get(db);
  if (!cache) {
    cache = { table: null, readAt: 0, reading: null };
    caches.set(db, cache);
  }
  if (cache.table && performance.now() - cache.readAt < ttl * 1000) return cache.table;
  if (!cache.reading) {
    cache.reading = readGates(db)
      .then((rows) => {
        cache.table = table(rows);
        cache.readAt = performance.now();
        return cache.table;
      })
      .finally(() => {
        cache.reading = null;
      });
  }
  try {
    return await cache.reading;
  } catch (error) {
    if (!cache.table) throw error;
    logger.warn(`skene: reading the gates failed, using the last ones read: ${error.message}`);
    return cache.table;
  }
}

/** Forget the cached gate table of a database (after `skene-pg apply`, in tests). */
export function clearGateCache(db) {
  caches.delete(db);
}
