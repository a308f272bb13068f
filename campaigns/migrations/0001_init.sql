-- callwise campaigns schema, version 1.
-- Raw card numbers never reach this database: every text column holds redacted text
-- (dialogue.redaction) and the store refuses text that still contains a card or ID number.

CREATE TABLE campaigns (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    product        text NOT NULL DEFAULT '',
    language       text NOT NULL DEFAULT 'zh',
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- local time of the contact; calls outside this window are not placed
    window_start   time NOT NULL DEFAULT '09:00',
    window_end     time NOT NULL DEFAULT '20:00',
    max_attempts   int NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    settings       jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE contacts (
    id             bigserial PRIMARY KEY,
    campaign_id    text NOT NULL REFERENCES campaigns(id),
    external_id    text NOT NULL,
    phone_e164     text NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    name           text NOT NULL DEFAULT '',
    time_zone      text NOT NULL DEFAULT 'Asia/Shanghai',
    consent        boolean NOT NULL DEFAULT false,
    consent_at     timestamptz,
    do_not_call    boolean NOT NULL DEFAULT false,
    dnc_at         timestamptz,
    dnc_reason     text,
    UNIQUE (campaign_id, external_id)
);
CREATE INDEX contacts_phone ON contacts (phone_e164);

-- one row per dial attempt; channel says who handled it
CREATE TABLE calls (
    id             text PRIMARY KEY,
    campaign_id    text NOT NULL REFERENCES campaigns(id),
    contact_id     bigint REFERENCES contacts(id),
    channel        text NOT NULL CHECK (channel IN ('ai', 'human')),
    agent_id       text NOT NULL,          -- a human agent's id, or the bot flow's id
    started_at     timestamptz NOT NULL,   -- dialled
    answered_at    timestamptz,
    ended_at       timestamptz,
    disposition    text CHECK (disposition IN ('converted', 'declined', 'call_back', 'do_not_call',
                                               'hand_off', 'no_answer', 'busy', 'voicemail',
                                               'failed'))
);
CREATE INDEX calls_campaign_started ON calls (campaign_id, started_at);
CREATE INDEX calls_campaign_agent ON calls (campaign_id, agent_id);

CREATE TABLE utterances (
    call_id        text NOT NULL REFERENCES calls(id),
    seq            int NOT NULL,
    role           text NOT NULL CHECK (role IN ('agent', 'bot', 'customer', 'unknown')),
    start_s        real NOT NULL,
    end_s          real NOT NULL,
    text_redacted  text NOT NULL,
    intent         text,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE suggestions (
    id             text PRIMARY KEY,
    call_id        text NOT NULL REFERENCES calls(id),
    shown_at       timestamptz NOT NULL,
    source         text NOT NULL CHECK (source IN ('llm', 'exemplar', 'override')),
    text_redacted  text NOT NULL,
    latency_ms     real,
    feedback       text CHECK (feedback IN ('accepted', 'dismissed')),
    feedback_at    timestamptz
);
CREATE INDEX suggestions_call ON suggestions (call_id);

-- what a call achieved; engagement is derived at query time (its definition is configurable)
CREATE TABLE outcomes (
    call_id        text PRIMARY KEY REFERENCES calls(id),
    answered       boolean NOT NULL DEFAULT false,
    converted      boolean NOT NULL DEFAULT false,
    opted_out      boolean NOT NULL DEFAULT false,
    handed_off     boolean NOT NULL DEFAULT false,
    customer_turns int NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- the append-only log every change arrives as; event_id makes delivery idempotent
CREATE TABLE events (
    event_id       uuid PRIMARY KEY,
    call_id        text NOT NULL,
    type           text NOT NULL,
    at             timestamptz NOT NULL,
    payload        jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_call ON events (call_id);

-- events that failed validation: kept (redacted) with the reason, never half-applied
CREATE TABLE rejected_events (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    reason         text NOT NULL,
    raw            text NOT NULL
);
