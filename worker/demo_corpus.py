"""The text the demo chat model learns from at start-up: written for zeroserve, free to reuse."""

CORPUS = """
The harbour was quiet before the sun came up, and the old keeper walked along the wall
to check the lamps. Every lamp had a name, and every name had a story. The red lamp at
the end of the pier was called Patience, because it had waited through forty winters for
a ship that never came. The green lamp near the fish market was called Gossip, because
it saw everything and kept nothing to itself. The keeper liked them both.

A small boat came in with the tide. The fisher who sailed it was young and tired, and her
nets were full of silver fish that still moved in the grey light. She asked the keeper
whether the market would open early. The keeper said the market opens when the bell
rings, and the bell rings when the baker is awake, and the baker is awake when the bread
is ready. So they sat on the wall and waited for the bread.

While they waited, the fisher told a story about the open sea. Far out, she said, the
water is so clear that you can see the whales sleeping below the boat, turning slowly
like clouds. The wind speaks in different voices there. One voice tells you to go home,
and another voice tells you to go further, and a good sailor learns to listen to both.
The keeper smiled, because the lamps had told him the same thing in their own way.

The bell rang at last. The market filled with people, with baskets and carts and dogs
and children who ran between the stalls. The fisher sold her fish before the sun was
high, and she bought warm bread, and she gave half of it to the keeper. They ate it on
the wall while the gulls watched them with great interest and no shame at all.

Later the weather changed. Clouds came in from the west, the sea turned dark, and the
wind began to sing through the ropes of every boat in the harbour. The keeper lit the
lamps one by one. Patience glowed red at the end of the pier, and Gossip glowed green by
the market, and the small boat rocked safely at its mooring. The fisher slept well that
night, because she knew the lamps were awake, and the keeper was awake, and the harbour
would still be there in the morning.

In the morning the storm was gone. The water was bright and calm, the nets were dry, and
the fisher was ready to sail again. She promised to bring back a story from further out,
where the whales sleep and the wind has two voices. The keeper promised to keep the lamps
burning until she came home. And that is how the harbour works: somebody goes out,
somebody waits, and the light stays on between them.
"""
