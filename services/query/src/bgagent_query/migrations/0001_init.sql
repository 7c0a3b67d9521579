-- Read models of the query service. Event and state payloads are `json` (not `jsonb`) on purpose:
-- json keeps the bytes the stream holds and accepts any valid JSON, including "\u0000" escapes that
-- jsonb rejects (a tool output with a NUL would otherwise stall the projector).

CREATE TABLE tasks (
    task_id    text PRIMARY KEY,
    user_id    text NOT NULL,
    status     text NOT NULL,
    repo       text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz,
    last_seq   bigint NOT NULL,
    state      json NOT NULL
);
CREATE INDEX tasks_user_id_task_id ON tasks (user_id, task_id DESC);
CREATE INDEX tasks_status_task_id ON tasks (status, task_id DESC);

CREATE TABLE task_events (
    seq     bigint PRIMARY KEY,
    task_id text NOT NULL,
    type    text NOT NULL,
    ts      timestamptz NOT NULL,
    event   json NOT NULL
);
CREATE INDEX task_events_task_id_seq ON task_events (task_id, seq);

CREATE TABLE projector_checkpoint (
    name     text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);

CREATE TABLE poison_messages (
    seq         bigint PRIMARY KEY,
    subject     text NOT NULL,
    error       text NOT NULL,
    raw         bytea NOT NULL,
    recorded_at timestamptz NOT NULL
);
