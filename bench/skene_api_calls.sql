-- Candidate: the gate on api_calls (a rolling 30d window), same customer choice as baseline.sql.
\set c random(:lo, :hi)
SELECT * FROM skene.check_and_increment(:c, 'api_calls');
