-- The launch specification a server was last started with (spawner::LaunchSpec as JSON):
-- the resolved profile and resources pages, admin, metrics and proxy routes read.
ALTER TABLE servers ADD COLUMN launch TEXT;
