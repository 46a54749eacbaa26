-- Run by the postgres image once, when its volume is first initialised, as POSTGRES_USER (marsad).
-- Prefect's server keeps its tables in a database of its own, apart from Marsad's: both use
-- Alembic, and a backup or restore of one must not touch the other.
-- A volume created before this file existed skips it: `docker compose exec postgres createdb -U
-- marsad prefect` once does the same.
CREATE DATABASE prefect OWNER marsad;
