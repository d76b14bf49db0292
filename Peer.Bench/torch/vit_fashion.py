# A PyTorch check of the vision model's design choices, outside Peer: the `dense` vision preset's model (7x7 patches,
# d = 64, 4 blocks of 4-head attention, dense feed-forward H = 144, mean pooling) trained on Fashion-MNIST with the
# presets' optimizer and schedule (AdamW lr 2e-3, weight decay 0.05, 100 warmup steps, cosine to 2 %, batch 128, clip 1),
# optionally with a convolutional stem (stem=C: a 3x3 convolution of C channels and GELU before the patches). It prints
# validation (the last 5,000 training images) and test accuracy. Used in docs/results.md to check that the stem helps
# before Peer's runs; needs Debian's python3-torch, python3-numpy and dataset-fashion-mnist.
#   /usr/bin/python3 Peer.Bench/torch/vit_fashion.py 1500 "" "stem=16"      # steps, then one model per argument
import gzip, numpy as np, torch, torch.nn as nn, torch.nn.functional as F, sys, time, math
torch.set_num_threads(1)  # one thread: the runs it was used for shared two cores
def idx(p, off):
    return np.frombuffer(gzip.open(p).read(), np.uint8, offset=off)
D='/usr/share/datasets/fashion-mnist/'
X=idx(D+'train-images-idx3-ubyte.gz',16).reshape(-1,784).astype(np.float32)/255; Y=idx(D+'train-labels-idx1-ubyte.gz',8).astype(np.int64)
Xt=idx(D+'t10k-images-idx3-ubyte.gz',16).reshape(-1,784).astype(np.float32)/255; Yt=idx(D+'t10k-labels-idx1-ubyte.gz',8).astype(np.int64)
m,s=X[:55000].mean(),X[:55000].std(); X=(X-m)/s; Xt=(Xt-m)/s
Xtr,Ytr,Xv,Yv=torch.tensor(X[:55000]),torch.tensor(Y[:55000]),torch.tensor(X[55000:]),torch.tensor(Y[55000:])
class Block(nn.Module):
    def __init__(s,d,h,H):
        super().__init__(); s.n1=nn.LayerNorm(d); s.a=nn.MultiheadAttention(d,h,batch_first=True); s.n2=nn.LayerNorm(d); s.f=nn.Sequential(nn.Linear(d,H),nn.GELU(),nn.Linear(H,d))
    def forward(s,x):
        h=s.n1(x); x=x+s.a(h,h,h,need_weights=False)[0]; return x+s.f(s.n2(x))
class ViT(nn.Module):
    def __init__(s,p=7,d=64,L=4,H=144,stem=0,k=3,stride=1):
        super().__init__(); s.p=p; s.stem=stem
        cin=1
        if stem: s.conv=nn.Conv2d(1,stem,k,stride,padding=k//2); cin=stem
        s.emb=nn.Conv2d(cin,d,p//stride,p//stride); T=(28//p)**2
        s.pos=nn.Parameter(torch.randn(1,T,d)*0.02); s.blocks=nn.ModuleList([Block(d,4,H) for _ in range(L)]); s.n=nn.LayerNorm(d); s.head=nn.Linear(d,10)
    def forward(s,x):
        x=x.view(-1,1,28,28)
        if s.stem: x=F.gelu(s.conv(x))
        x=s.emb(x).flatten(2).transpose(1,2)+s.pos
        for b in s.blocks: x=b(x)
        return s.head(s.n(x).mean(1))
def run(name, steps, **kw):
    torch.manual_seed(1); model=ViT(**kw); opt=torch.optim.AdamW(model.parameters(),2e-3,weight_decay=0.05)
    sched=lambda t: (t+1)/100 if t<100 else 0.02+0.98*0.5*(1+math.cos(math.pi*(t-100)/(steps-100)))
    g=torch.Generator().manual_seed(1); t0=time.time(); perm=torch.randperm(55000,generator=g); pos=0
    for t in range(steps):
        for pg in opt.param_groups: pg['lr']=2e-3*sched(t)
        if pos+128>55000: perm=torch.randperm(55000,generator=g); pos=0
        ids=perm[pos:pos+128]; pos+=128
        loss=F.cross_entropy(model(Xtr[ids]),Ytr[ids]); opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(model.parameters(),1.0); opt.step()
    model.eval()
    with torch.no_grad(): acc=(model(Xv).argmax(1)==Yv).float().mean().item(); tacc=(model(torch.tensor(Xt)).argmax(1)==torch.tensor(Yt)).float().mean().item()
    print(f"{name}: steps {steps} val {acc*100:.2f} test {tacc*100:.2f} params {sum(p.numel() for p in model.parameters())} {time.time()-t0:.0f}s", flush=True)
steps=int(sys.argv[1])
for a in sys.argv[2:]:
    kw=eval("dict("+a+")"); run(a, steps, **kw)
