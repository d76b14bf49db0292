global using Peer.Nn;
global using Peer.Optim;
global using ILGPU.Runtime;
