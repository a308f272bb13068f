"""The SQL that stages a batch of events and projects it into calls, utterances, suggestions and
outcomes. It runs inside the ingest transaction, after `_cw_batch` holds the batch.

Ordering: events of a call may arrive in any order, within a batch or across batches, so every
rule below gives the same rows whatever the arrival order:
- every accepted event goes to the `events` log first, even when its call does not exist yet;
- an event whose call has not started is kept there, unprojected ("pending"); when the call's
  `call_started` arrives, the call is created and all its logged events are replayed;
- each projection is an idempotent merge keyed by time: the earliest `call_started` and
  `call_answered` count, the latest `call_ended`, utterance (per call and seq), showing and
  feedback (per suggestion) win; ties on `at` are broken by `event_id` within a batch;
- outcomes are recomputed from the projected rows of every call the batch touched, so
  customer_turns counts distinct seq however often an utterance is re-sent.
Replaying an event twice therefore changes nothing, which is what makes a redelivery from the
outbox, or a replay of the log, safe.
"""

from __future__ import annotations

# Made once per connection (see db._init_connection); emptied at every commit.
SESSION_SQL = """
CREATE TEMP TABLE IF NOT EXISTS _cw_batch (
    event_id uuid NOT NULL, call_id text NOT NULL, type text NOT NULL,
    at timestamptz NOT NULL, payload jsonb NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _cw_todo (
    event_id uuid NOT NULL, call_id text NOT NULL, type text NOT NULL,
    at timestamptz NOT NULL, payload jsonb NOT NULL, fresh boolean NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _cw_new_calls (id text PRIMARY KEY) ON COMMIT DELETE ROWS;
"""

BATCH_COLUMNS = ("event_id", "call_id", "type", "at", "payload")

# Small batches: one INSERT with array parameters beats COPY's extra round trips.
FILL_SQL = """
INSERT INTO _cw_batch (event_id, call_id, type, at, payload)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])
"""

# One simple-protocol round trip: every step reads the staged rows, none takes parameters.
PROJECT_SQL = """
-- These statements are short; JIT compiling them (the estimates on unanalysed temporary tables
-- can cross jit_above_cost) costs hundreds of milliseconds and saves nothing.
SET LOCAL jit = off;

WITH ins AS (
    INSERT INTO events (event_id, call_id, type, at, payload)
    SELECT event_id, call_id, type, at, payload FROM _cw_batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, call_id, type, at, payload
)
INSERT INTO _cw_todo SELECT event_id, call_id, type, at, payload, true FROM ins;

-- Autovacuum never analyses temporary tables; without statistics the planner guesses their
-- size and can pick a sequential scan of the whole events log for the replay below.
ANALYZE _cw_todo;

WITH started AS (
    SELECT DISTINCT ON (call_id) call_id, at, payload FROM _cw_todo
    WHERE type = 'call_started'
    ORDER BY call_id, at, event_id
), ins AS (
    INSERT INTO calls (id, campaign_id, contact_id, channel, agent_id, started_at)
    SELECT s.call_id, s.payload->>'campaign_id', k.id, s.payload->>'channel',
           s.payload->>'agent_id', s.at
    FROM started s
    LEFT JOIN contacts k ON k.campaign_id = s.payload->>'campaign_id'
                        AND k.external_id = s.payload->>'contact_external_id'
    ON CONFLICT (id) DO UPDATE SET
        campaign_id = excluded.campaign_id, contact_id = excluded.contact_id,
        channel = excluded.channel, agent_id = excluded.agent_id, started_at = excluded.started_at
    WHERE excluded.started_at < calls.started_at
    RETURNING id
)
INSERT INTO _cw_new_calls SELECT id FROM ins;

INSERT INTO outcomes (call_id) SELECT id FROM _cw_new_calls ON CONFLICT (call_id) DO NOTHING;

ANALYZE _cw_new_calls;

-- The log is read call by call through events_call: a LATERAL subquery behind OFFSET 0 cannot be
-- flattened into a join, so the planner cannot trade it for a scan of the whole log (it did, on
-- 6M events with stale statistics during a bulk load: 4 s per batch).
INSERT INTO _cw_todo
SELECT e.event_id, e.call_id, e.type, e.at, e.payload, false
FROM _cw_new_calls n
CROSS JOIN LATERAL (SELECT * FROM events l WHERE l.call_id = n.id OFFSET 0) e
WHERE NOT EXISTS (SELECT 1 FROM _cw_todo t WHERE t.event_id = e.event_id);

UPDATE calls c SET answered_at = a.at
FROM (SELECT call_id, min(at) AS at FROM _cw_todo
      WHERE type = 'call_answered' GROUP BY call_id) a
WHERE c.id = a.call_id AND (c.answered_at IS NULL OR a.at < c.answered_at);

INSERT INTO utterances (call_id, seq, role, start_s, end_s, text_redacted, intent, at)
SELECT DISTINCT ON (t.call_id, (t.payload->>'seq')::int)
       t.call_id, (t.payload->>'seq')::int, t.payload->>'role',
       (t.payload->>'start_s')::real, (t.payload->>'end_s')::real,
       t.payload->>'text', t.payload->>'intent', t.at
FROM _cw_todo t JOIN calls c ON c.id = t.call_id
WHERE t.type = 'utterance'
ORDER BY t.call_id, (t.payload->>'seq')::int, t.at DESC, t.event_id DESC
ON CONFLICT (call_id, seq) DO UPDATE SET
    role = excluded.role, start_s = excluded.start_s, end_s = excluded.end_s,
    text_redacted = excluded.text_redacted, intent = excluded.intent, at = excluded.at
WHERE utterances.at IS NULL OR excluded.at > utterances.at;

INSERT INTO suggestions (id, call_id, shown_at, source, text_redacted, latency_ms)
SELECT DISTINCT ON (t.payload->>'suggestion_id')
       t.payload->>'suggestion_id', t.call_id, t.at, t.payload->>'source', t.payload->>'text',
       (t.payload->>'latency_ms')::real
FROM _cw_todo t JOIN calls c ON c.id = t.call_id
WHERE t.type = 'suggestion_shown'
ORDER BY t.payload->>'suggestion_id', t.at DESC, t.event_id DESC
ON CONFLICT (id) DO UPDATE SET
    shown_at = excluded.shown_at, source = excluded.source,
    text_redacted = excluded.text_redacted, latency_ms = excluded.latency_ms
WHERE excluded.shown_at > suggestions.shown_at;

-- Feedback is read from the log, not only from this batch: it may have arrived before the
-- suggestion it is about was shown (and so had nothing to update then).
UPDATE suggestions s SET feedback = f.feedback, feedback_at = f.at
FROM (
    SELECT DISTINCT ON (e.payload->>'suggestion_id')
           e.payload->>'suggestion_id' AS id, e.payload->>'feedback' AS feedback, e.at
    FROM (SELECT DISTINCT call_id FROM _cw_todo
          WHERE type IN ('suggestion_shown', 'suggestion_feedback')) t
    CROSS JOIN LATERAL (SELECT * FROM events l
                        WHERE l.call_id = t.call_id AND l.type = 'suggestion_feedback'
                        OFFSET 0) e
    ORDER BY e.payload->>'suggestion_id', e.at DESC, e.event_id DESC
) f
WHERE s.id = f.id
  AND (s.feedback_at IS NULL OR f.at > s.feedback_at
       OR (f.at = s.feedback_at AND f.feedback IS DISTINCT FROM s.feedback));

UPDATE calls c SET ended_at = e.at, disposition = e.disposition,
                   wrap_up_note = e.note, wrapped_up_by = e.by
FROM (SELECT DISTINCT ON (call_id) call_id, at, payload->>'disposition' AS disposition,
             nullif(payload->'note', 'null'::jsonb) AS note, payload->>'by' AS by
      FROM _cw_todo WHERE type = 'call_ended'
      ORDER BY call_id, at DESC, event_id DESC) e
WHERE c.id = e.call_id AND (c.ended_at IS NULL OR e.at > c.ended_at);

-- "Stop calling me" is about the number: register it, then flag it in every campaign.
WITH opted AS (
    SELECT DISTINCT ON (k.phone_e164) k.phone_e164, c.id, c.ended_at
    FROM calls c JOIN contacts k ON k.id = c.contact_id
    WHERE c.id IN (SELECT call_id FROM _cw_todo WHERE type = 'call_ended')
      AND c.disposition = 'do_not_call'
    ORDER BY k.phone_e164, c.ended_at, c.id
), registered AS (
    INSERT INTO do_not_call (phone_e164, reason, source, at)
    SELECT phone_e164, 'asked not to be called on call ' || id, 'call', ended_at FROM opted
    ON CONFLICT (phone_e164) DO NOTHING
)
UPDATE contacts k SET do_not_call = true, dnc_at = o.ended_at,
                      dnc_reason = 'asked not to be called on call ' || o.id
FROM opted o
WHERE k.phone_e164 = o.phone_e164 AND NOT k.do_not_call;

-- MATERIALIZED: computed for the touched calls first. Inlined, the planner once merged all of
-- outcomes with calls and ran the turn count for every call in the table.
WITH touched AS MATERIALIZED (
    SELECT c.id,
           c.answered_at IS NOT NULL AS answered,
           c.disposition IS NOT DISTINCT FROM 'converted' AS converted,
           c.disposition IS NOT DISTINCT FROM 'do_not_call' AS opted_out,
           c.disposition IS NOT DISTINCT FROM 'hand_off' AS handed_off,
           (SELECT count(*) FROM utterances u
            WHERE u.call_id = c.id AND u.role = 'customer')::int AS customer_turns
    FROM (SELECT DISTINCT call_id FROM _cw_todo) t JOIN calls c ON c.id = t.call_id
)
UPDATE outcomes o SET
    answered = n.answered, converted = n.converted, opted_out = n.opted_out,
    handed_off = n.handed_off, customer_turns = n.customer_turns, updated_at = now()
FROM touched n
WHERE o.call_id = n.id
  AND (o.answered, o.converted, o.opted_out, o.handed_off, o.customer_turns)
      IS DISTINCT FROM (n.answered, n.converted, n.opted_out, n.handed_off, n.customer_turns);
"""

COUNT_SQL = """
SELECT count(*) FILTER (WHERE fresh) AS accepted,
       count(*) FILTER (WHERE fresh AND NOT EXISTS (
           SELECT 1 FROM calls c WHERE c.id = t.call_id)) AS pending
FROM _cw_todo t
"""
