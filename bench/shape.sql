-- Diagnostic: the shape the SQL contract prescribes (a SECURITY DEFINER PL/pgSQL function,
-- search_path pinned, returning skene.decision) around the bare UPDATE, with no logic.
\set c random(:lo, :hi)
SELECT * FROM bench.shape(:c, 'api_calls');
