//! Data sets. For now: the 2-D toy distributions used to see mode collapse. The image loaders
//! (IDX, CIFAR-10 binary, image folders) and the procedural digits come with issue 5.

pub mod toy;
