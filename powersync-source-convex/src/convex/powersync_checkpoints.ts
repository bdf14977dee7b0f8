import { internalMutation } from "./_generated/server";
import { v } from "convex/values";

// Called by powersync-source's write_checkpoint() with the deploy key: inserts one marker row
// and returns its id. Internal, so nobody without a deploy key can call it. Markers created
// over a minute ago are removed on the way (read through the built-in by_creation_time index,
// so concurrent calls do not conflict), so the table stays tiny.
export const createCheckpoint = internalMutation({
  args: {},
  returns: v.id("powersync_checkpoints"),
  handler: async (ctx) => {
    const now = Date.now();
    const stale = await ctx.db
      .query("powersync_checkpoints")
      .withIndex("by_creation_time", (q) => q.lt("_creationTime", now - 60_000))
      .take(16);
    for (const row of stale) {
      await ctx.db.delete(row._id);
    }
    return await ctx.db.insert("powersync_checkpoints", { last_updated: now });
  },
});
