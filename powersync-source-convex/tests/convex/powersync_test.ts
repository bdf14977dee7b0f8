// Test-only functions for powersync-source-convex's real-deployment conformance suite.
import { mutation, query } from "./_generated/server";
import { v } from "convex/values";

const op = v.object({
  op: v.union(v.literal("insert"), v.literal("update"), v.literal("delete"), v.literal("truncate")),
  id: v.optional(v.float64()),
  v: v.optional(v.string()),
});

// Runs the statements as one mutation (one Convex transaction).
export const apply = mutation({
  args: { ops: v.array(op) },
  handler: async (ctx, { ops }) => {
    for (const o of ops) {
      if (o.op === "truncate") {
        for (const d of await ctx.db.query("powersync_conformance").take(4000)) {
          await ctx.db.delete(d._id);
        }
        continue;
      }
      const id = BigInt(o.id ?? 0);
      const existing = await ctx.db
        .query("powersync_conformance")
        .withIndex("by_id", (q) => q.eq("id", id))
        .first();
      if (o.op === "insert") {
        await ctx.db.insert("powersync_conformance", { id, v: o.v });
      } else if (o.op === "update" && existing) {
        await ctx.db.patch(existing._id, { v: o.v });
      } else if (o.op === "delete" && existing) {
        await ctx.db.delete(existing._id);
      }
    }
  },
});

// Deletes up to 4000 rows; returns whether rows remain.
export const clear = mutation({
  args: {},
  handler: async (ctx) => {
    const rows = await ctx.db.query("powersync_conformance").take(4000);
    for (const d of rows) {
      await ctx.db.delete(d._id);
    }
    return rows.length === 4000;
  },
});

export const setExtra = mutation({
  args: { id: v.float64(), value: v.optional(v.string()) },
  handler: async (ctx, { id, value }) => {
    const existing = await ctx.db
      .query("powersync_conformance")
      .withIndex("by_id", (q) => q.eq("id", BigInt(id)))
      .first();
    if (existing) {
      await ctx.db.patch(existing._id, { extra: value });
    }
  },
});

// Removes `extra` from up to 4000 rows; returns whether rows may remain.
export const dropExtra = mutation({
  args: {},
  handler: async (ctx) => {
    const rows = await ctx.db
      .query("powersync_conformance")
      .filter((q) => q.neq(q.field("extra"), undefined))
      .take(4000);
    for (const d of rows) {
      await ctx.db.patch(d._id, { extra: undefined });
    }
    return rows.length === 4000;
  },
});

export const readPage = query({
  args: { cursor: v.union(v.string(), v.null()) },
  handler: async (ctx, { cursor }) => {
    return await ctx.db
      .query("powersync_conformance")
      .paginate({ numItems: 1000, cursor });
  },
});
