import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  // ...your tables...
  powersync_checkpoints: defineTable({
    last_updated: v.float64(),
  }),
});
