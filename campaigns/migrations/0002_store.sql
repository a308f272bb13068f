-- callwise campaigns schema, version 2: what the event store needs beyond version 1.

-- Do-not-call is a property of a phone number, not of one contact row: an opt-out given on a
-- call, or a number on a regulator's list, must hold in every campaign, including contact lists
-- imported after it was given. contacts.do_not_call stays as the flag the dialer reads.
CREATE TABLE do_not_call (
    phone_e164     text PRIMARY KEY CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    reason         text NOT NULL,
    source         text NOT NULL,          -- 'call' (opted out on a call), 'import', 'manual'
    at             timestamptz NOT NULL DEFAULT now()
);

-- When the same (call_id, seq) is sent again (an ASR correction), the utterance said last wins,
-- whatever order the two events arrive in; NULL only for rows written before version 2.
ALTER TABLE utterances ADD COLUMN at timestamptz;
