-- Up Migration
-- The library's sealed scope now marks its version (the comment of `seal_of`), and the start-up guard
-- refuses a database whose seal is of another version or unmarked (found by review: a database that
-- kept the first 0018's seal, of an earlier formula, passed the guard). This re-installs the seal as
-- 0018 left it, marked: the same formula, so scopes open while it commits keep their seals. Run it
-- before rolling out the API and workers of this release, whose guard asks for the mark.

{{scope_seal}}

-- Down Migration
-- (The seal stays as it is: the mark is only its name.)
select 1;
