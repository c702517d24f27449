//! Versioned schema migrations. Migration N (1-based) takes the catalog from
//! `user_version` N-1 to N in one transaction. Never edit a released
//! migration; append a new one.
//!
//! The SQL is kept to what SQLite and PostgreSQL both accept (TEXT, BLOB/
//! BYTEA aside), so that a shared PostgreSQL catalog can later replace SQLite
//! for several adapter instances.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the key hierarchy.
    r#"
    CREATE TABLE kms (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        identity    TEXT NOT NULL,            -- token label/serial, not secret
        first_used  TEXT NOT NULL
    );
    CREATE TABLE pools (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        kms_name        TEXT NOT NULL REFERENCES kms(name),
        mk_id           TEXT NOT NULL,        -- master key reference in the KMS
        mk_label        TEXT NOT NULL,
        mk_material     BLOB,                 -- built-in KMS only: MK sealed under the root key
        mk_owned        INTEGER NOT NULL,     -- 1: created by keybridge, 0: adopted
        kek_bits        INTEGER NOT NULL,
        kek_public      BLOB NOT NULL,        -- SubjectPublicKeyInfo DER, in clear
        kek_wrapped     BLOB NOT NULL,        -- private KEK wrapped by the MK
        wrap_mechanism  TEXT NOT NULL,        -- e.g. CKM_AES_KEY_WRAP_KWP
        oaep_hash       TEXT NOT NULL,        -- sha1 | sha256, probed per pool
        params          TEXT NOT NULL,        -- JSON: exact mechanisms and parameters
        created_at      TEXT NOT NULL
    );
    CREATE TABLE clients (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        kdf         TEXT NOT NULL,            -- JSON: Argon2id parameters
        salt        BLOB NOT NULL,
        seal_public BLOB NOT NULL,            -- X25519 public key derived from the password
        created_at  TEXT NOT NULL
    );
    CREATE TABLE deks (
        id            TEXT PRIMARY KEY,
        pool_id       INTEGER NOT NULL REFERENCES pools(id),
        client_id     INTEGER NOT NULL REFERENCES clients(id),
        encrypted_dek BLOB NOT NULL,          -- RSA-OAEP under the pool's public KEK
        created_at    TEXT NOT NULL
    );
    CREATE INDEX deks_by_pool_client ON deks(pool_id, client_id);
    "#,
    // 2: the audit log, a hash chain (see src/audit.rs). Appended only by
    // the catalog's writer thread; `seq` is contiguous from 1.
    r#"
    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,       -- 1, 2, 3, ... no gaps
        at         TEXT NOT NULL,             -- UTC, RFC 3339 with milliseconds
        actor      TEXT NOT NULL,             -- local:USER | operator:NAME | client:NAME
        action     TEXT NOT NULL,             -- pool.create | client.add | dek.issue | dek.recover
        pool       TEXT,
        client     TEXT,
        dek_id     TEXT,
        result     TEXT NOT NULL,             -- ok | error: <message> (never a secret)
        prev_hash  BLOB NOT NULL,             -- hash of row seq-1; 32 zero bytes for row 1
        hash       BLOB NOT NULL              -- SHA-256, see src/audit.rs
    );
    "#,
    // 3: the service and backup jobs.
    r#"
    -- Ed25519 key verifying the client's signed requests (derived from its
    -- password like seal_public). NULL: registered before the service.
    ALTER TABLE clients ADD COLUMN auth_public BLOB;
    CREATE TABLE jobs (
        id             TEXT PRIMARY KEY,      -- UUIDv7
        pool_id        INTEGER NOT NULL REFERENCES pools(id),
        client_id      INTEGER NOT NULL REFERENCES clients(id),
        dek_id         TEXT NOT NULL REFERENCES deks(id),
        media_agent    TEXT NOT NULL,         -- URL the stream was sent to
        state          TEXT NOT NULL,         -- running | complete
        stream_bytes   INTEGER,               -- ciphertext bytes, as stored
        stream_checksum TEXT,                 -- crc32c:XXXXXXXX, as reported by the agent
        plain_bytes    INTEGER,
        files          INTEGER,
        created_at     TEXT NOT NULL,
        completed_at   TEXT
    );
    CREATE INDEX jobs_by_client ON jobs(client_id, created_at);
    "#,
    // 4: nonces of signed service requests, shared by every service process
    // on this catalog and kept across restarts (replays are refused while
    // the request's timestamp is still accepted). Rows past `expires` are
    // deleted by the catalog writer.
    r#"
    CREATE TABLE request_nonces (
        client   TEXT NOT NULL,
        nonce    TEXT NOT NULL,               -- 128-bit random, hex
        expires  INTEGER NOT NULL,            -- Unix seconds
        PRIMARY KEY (client, nonce)
    );
    CREATE INDEX request_nonces_by_expiry ON request_nonces(expires);
    "#,
    // 5: the key lifecycle (docs/design.md, "Key lifecycle"). A pool has
    // KEK generations; each generation's private half is wrapped under one
    // or more master keys; master keys have states. Each existing pool
    // becomes generation 1 with one wrapping under its master key; the
    // pool row keeps its KMS (where new master keys and KEKs are made).
    r#"
    CREATE TABLE master_keys (
        id              INTEGER PRIMARY KEY,
        kms_name        TEXT NOT NULL REFERENCES kms(name),
        key_ref         TEXT NOT NULL,        -- reference in the KMS (CKA_ID hex, KMIP id)
        label           TEXT NOT NULL,
        material        BLOB,                 -- built-in KMS only: MK sealed under the root key
        owned           INTEGER NOT NULL,     -- 1: created by keybridge, 0: adopted
        state           TEXT NOT NULL,        -- active | deactivated | destroyed
        created_at      TEXT NOT NULL,
        deactivated_at  TEXT,
        destroyed_at    TEXT
    );
    CREATE TABLE kek_generations (
        pool_id     INTEGER NOT NULL REFERENCES pools(id),
        generation  INTEGER NOT NULL,         -- 1, 2, ... new DEKs use the newest
        bits        INTEGER NOT NULL,
        kek_public  BLOB NOT NULL,            -- SubjectPublicKeyInfo DER, in clear
        oaep_hash   TEXT NOT NULL,
        params      TEXT NOT NULL,            -- JSON: exact mechanisms and parameters
        created_at  TEXT NOT NULL,
        PRIMARY KEY (pool_id, generation)
    );
    CREATE TABLE wrappings (
        pool_id         INTEGER NOT NULL,
        generation      INTEGER NOT NULL,
        master_key_id   INTEGER NOT NULL REFERENCES master_keys(id),
        wrap_mechanism  TEXT NOT NULL,
        wrapped         BLOB NOT NULL,        -- the generation's private KEK under the MK
        priority        INTEGER NOT NULL,     -- lower first
        created_at      TEXT NOT NULL,
        PRIMARY KEY (pool_id, generation, master_key_id),
        FOREIGN KEY (pool_id, generation) REFERENCES kek_generations(pool_id, generation)
    );
    CREATE INDEX wrappings_by_master_key ON wrappings(master_key_id);
    -- One row per key in a KMS: pools that adopted the same key share it.
    CREATE UNIQUE INDEX master_keys_by_ref ON master_keys(kms_name, key_ref);
    -- Ids chosen here (the smallest pool id using the key); a PostgreSQL
    -- port must move its sequence past them (setval).
    INSERT INTO master_keys(id, kms_name, key_ref, label, material, owned, state, created_at)
        SELECT MIN(id), kms_name, mk_id, MIN(mk_label), MIN(mk_material), MAX(mk_owned), 'active', MIN(created_at)
        FROM pools GROUP BY kms_name, mk_id;
    INSERT INTO kek_generations(pool_id, generation, bits, kek_public, oaep_hash, params, created_at)
        SELECT id, 1, kek_bits, kek_public, oaep_hash, params, created_at FROM pools;
    INSERT INTO wrappings(pool_id, generation, master_key_id, wrap_mechanism, wrapped, priority, created_at)
        SELECT p.id, 1, m.id, p.wrap_mechanism, p.kek_wrapped, 0, p.created_at
        FROM pools p JOIN master_keys m ON m.kms_name = p.kms_name AND m.key_ref = p.mk_id;
    ALTER TABLE pools DROP COLUMN mk_id;
    ALTER TABLE pools DROP COLUMN mk_label;
    ALTER TABLE pools DROP COLUMN mk_material;
    ALTER TABLE pools DROP COLUMN mk_owned;
    ALTER TABLE pools DROP COLUMN kek_bits;
    ALTER TABLE pools DROP COLUMN kek_public;
    ALTER TABLE pools DROP COLUMN kek_wrapped;
    ALTER TABLE pools DROP COLUMN wrap_mechanism;
    ALTER TABLE pools DROP COLUMN oaep_hash;
    ALTER TABLE pools DROP COLUMN params;
    ALTER TABLE deks ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX deks_by_pool_generation ON deks(pool_id, generation);
    "#,
    // 6: the key lifecycle's state (docs/design.md, "Key lifecycle"): the
    // pool a master key was made for (adopted keys may serve several), the
    // pool's rotation schedule and history, its escrow exports, whether it
    // was shredded, and the journal of multi-step changes. At most one
    // open journal entry per pool: two changes to one pool never interleave.
    r#"
    ALTER TABLE master_keys ADD COLUMN pool_id INTEGER REFERENCES pools(id);
    UPDATE master_keys SET pool_id = (SELECT MIN(w.pool_id) FROM wrappings w WHERE w.master_key_id = master_keys.id);
    ALTER TABLE pools ADD COLUMN rotation_days INTEGER;   -- NULL: the configuration's default
    ALTER TABLE pools ADD COLUMN rotated_at TEXT;         -- last master-key rotation
    ALTER TABLE pools ADD COLUMN escrow_exported_at TEXT; -- last `pool export`
    ALTER TABLE pools ADD COLUMN shredded_at TEXT;        -- every master key destroyed
    CREATE TABLE journal (
        id          INTEGER PRIMARY KEY,
        pool_id     INTEGER NOT NULL REFERENCES pools(id),
        operation   TEXT NOT NULL,            -- rotate | wrap | unwrap | migrate | import | shred
        step        TEXT NOT NULL,            -- planned | keys_made | committed | done | rolled_back
        state       TEXT NOT NULL,            -- open | done | rolled_back
        owner       TEXT NOT NULL,            -- host:pid:start of the process running it
        detail      TEXT NOT NULL,            -- JSON: the keys made, the keys to deactivate
        started_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE UNIQUE INDEX journal_open_by_pool ON journal(pool_id) WHERE state = 'open';
    "#,
    // 7: deks_by_pool_client served no query (a DEK is read by its id, and
    // counted through deks_by_pool_generation), and each DEK issued wrote
    // to it where its client's entries end: a group commit of DEKs for n
    // clients rewrote n of its pages.
    r#"
    DROP INDEX deks_by_pool_client;
    "#,
    // 8: a version of every row a pool or a client is read from, changed
    // by each write to them (a random value, so that no other history of
    // the file, such as a restored copy, can show the same one). A process
    // keeps the pools and clients it read by name while the version stands
    // (docs/design.md, "Pools and clients read by name are kept").
    r#"
    CREATE TABLE catalog_version (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        v   INTEGER NOT NULL
    );
    INSERT INTO catalog_version(id, v) VALUES (1, random());
    CREATE TRIGGER pools_insert_version AFTER INSERT ON pools BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER pools_update_version AFTER UPDATE ON pools BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER pools_delete_version AFTER DELETE ON pools BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER kek_generations_insert_version AFTER INSERT ON kek_generations BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER kek_generations_update_version AFTER UPDATE ON kek_generations BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER kek_generations_delete_version AFTER DELETE ON kek_generations BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER wrappings_insert_version AFTER INSERT ON wrappings BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER wrappings_update_version AFTER UPDATE ON wrappings BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER wrappings_delete_version AFTER DELETE ON wrappings BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER master_keys_insert_version AFTER INSERT ON master_keys BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER master_keys_update_version AFTER UPDATE ON master_keys BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER master_keys_delete_version AFTER DELETE ON master_keys BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER clients_insert_version AFTER INSERT ON clients BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER clients_update_version AFTER UPDATE ON clients BEGIN UPDATE catalog_version SET v = random(); END;
    CREATE TRIGGER clients_delete_version AFTER DELETE ON clients BEGIN UPDATE catalog_version SET v = random(); END;
    "#,
];
