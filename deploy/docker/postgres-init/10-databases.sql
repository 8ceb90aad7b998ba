-- Run once by the postgres image on an empty data directory (POSTGRES_DB creates `dagster`).
-- `hybrid`: the project's own tables (schemas are applied idempotently by the resources).
-- `juicefs`: metadata of the JuiceFS hot-tier volume.
CREATE DATABASE hybrid;
CREATE DATABASE juicefs;
-- `ai_platform`: the AI platform's own database (resource ai_postgres, HP_AI_PG_*).
CREATE DATABASE ai_platform;
