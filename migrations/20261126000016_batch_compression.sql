-- A batch's compressible arrays are compressed with LZ4 (migration 15 kept
-- them uncompressed out of line).
--
-- Migration 15 stored every array of a batch out of line and uncompressed,
-- because pglz (the default method) cost more CPU than the WAL it saved.
-- Out of line uncompressed, a send of 100 ~230-byte payloads writes about
-- 17 TOAST chunks (each a row with an index entry, each later deleted);
-- LZ4 is several times cheaper than pglz and turns those payloads into
-- about 4 KB (32 KB of seed proposals with random ids: 4,228 bytes), so a
-- batch of 100 now writes two or three chunks. PostgreSQL compresses a
-- value in place first and moves it out of line only while the row is
-- still over about 2 KB: a batch of 100 keeps its arrays out of line and
-- a claim rewrites only the small main tuple (claims stay HOT), while a
-- batch of about ten seed-sized messages or fewer keeps its compressed
-- arrays in the row (about 1.9 KB for ten seed proposals against 1.0 KB
-- before), which its claim then rewrites. Alternated runs of the batched
-- benchmark (sends of 100) on the development VM: 64-74k msg/s before,
-- 73-84k with LZ4.
--
-- The id arrays stay as they were (random UUIDs do not compress). A server
-- built without LZ4 keeps migration 15's storage: the statement below then
-- fails with feature_not_supported and is skipped, with a notice.
DO $$
BEGIN
    ALTER TABLE pgflow.batches
        ALTER COLUMN seqs SET STORAGE EXTENDED,
        ALTER COLUMN seqs SET COMPRESSION lz4,
        ALTER COLUMN msg_types SET STORAGE EXTENDED,
        ALTER COLUMN msg_types SET COMPRESSION lz4,
        ALTER COLUMN schema_versions SET COMPRESSION lz4,
        ALTER COLUMN sources SET STORAGE EXTENDED,
        ALTER COLUMN sources SET COMPRESSION lz4,
        ALTER COLUMN payloads SET STORAGE EXTENDED,
        ALTER COLUMN payloads SET COMPRESSION lz4;
    -- An archived batch is copied from its live row: the values arrive
    -- compressed already and are stored as they are.
    ALTER TABLE pgflow.archive_batches
        ALTER COLUMN seqs SET STORAGE EXTENDED,
        ALTER COLUMN seqs SET COMPRESSION lz4,
        ALTER COLUMN msg_types SET STORAGE EXTENDED,
        ALTER COLUMN msg_types SET COMPRESSION lz4,
        ALTER COLUMN schema_versions SET COMPRESSION lz4,
        ALTER COLUMN sources SET STORAGE EXTENDED,
        ALTER COLUMN sources SET COMPRESSION lz4,
        ALTER COLUMN payloads SET STORAGE EXTENDED,
        ALTER COLUMN payloads SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'pgflow: this server has no LZ4 support; batches stay uncompressed (%)', SQLERRM;
END
$$;
