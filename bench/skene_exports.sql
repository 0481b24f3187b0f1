-- Candidate: the gate on exports (a calendar month), same customer choice as baseline.sql.
\set c random(:lo, :hi)
SELECT * FROM skene.check_and_increment(:c, 'exports');
