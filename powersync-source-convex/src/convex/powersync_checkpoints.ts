import { mutation } from "./_generated/server";

// Called by powersync-source's write_checkpoint(): inserts one marker row and returns its id
// (the connector reads the row's commit timestamp with it). Markers older than a minute are
// removed on the way, so the table stays tiny.
export const createCheckpoint = mutation({
  args: {},
  handler: async (ctx) => {
    const now = Date.now();
    const stale = await ctx.db
      .query("powersync_checkpoints")
      .filter((q) => q.lt(q.field("last_updated"), now - 60_000))
      .take(16);
    for (const row of stale) {
      await ctx.db.delete(row._id);
    }
    return await ctx.db.insert("powersync_checkpoints", { last_updated: now });
  },
});
