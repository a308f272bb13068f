-- callwise schema, version 3: the people who may use the live call runtime (assist.auth).
-- Passwords are stored only as self-describing scrypt hashes ("scrypt$n$r$p$salt$hash").

CREATE TABLE users (
    username       text PRIMARY KEY,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('agent', 'supervisor')),
    agent_id       text,                   -- the id calls are assigned to (calls.agent_id)
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- an agent without an agent id could read no call, or (a bug away) every call
    CHECK (role <> 'agent' OR agent_id IS NOT NULL)
);

-- "Agent1" next to "agent1" would be two people in an audit trail that reads as one
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
