import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.runtime.checkpoint.CheckpointStatsSnapshot;
import org.apache.flink.runtime.executiongraph.ArchivedExecutionGraph;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.jobmaster.JobResult;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.graph.StreamGraph;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingProcessingTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Nexmark, Flink side: the same generator as crates/cairn-nexmark (event n is a pure function of
 * n, SplitMix64 seeded by n) and the same algorithm for every query, so both engines produce the
 * same checksum (sum of record signatures). Runs one query in an in-process MiniCluster, like
 * ../shared/peers/flink/src/PeerBench.java, and prints one summary line.
 *
 *   java -cp ... NexmarkBench --query q5 --events 10000000 --parallelism 2 --interval-ms 1000
 */
public class NexmarkBench {

    // ------------------------------------------------------------------ model

    public static class Person {
        public long id;
        public String name, emailAddress, creditCard, city, state, extra;
        public long dateTime;
        public Person() {}
    }

    public static class Auction {
        public long id, initialBid, reserve, dateTime, expires, seller, category;
        public String itemName, description, extra;
        public Auction() {}
    }

    public static class Bid {
        public long auction, bidder, price, dateTime;
        public String channel, url, extra;
        public Bid() {}
    }

    /** One event: exactly one of the three fields is set. */
    public static class Event {
        public Person person;
        public Auction auction;
        public Bid bid;
        public Event() {}
        long dateTime() {
            return person != null ? person.dateTime : auction != null ? auction.dateTime : bid.dateTime;
        }
    }

    // -------------------------------------------------------------- generator

    static final long FIRST_PERSON_ID = 1000, FIRST_AUCTION_ID = 1000, FIRST_CATEGORY_ID = 10, NUM_CATEGORIES = 5;
    static final long PERSON_PROPORTION = 1, AUCTION_PROPORTION = 3, PROPORTION_DENOMINATOR = 50;
    static final long NUM_IN_FLIGHT_AUCTIONS = 100, NUM_ACTIVE_PEOPLE = 1000, AUCTION_ID_LEAD = 10, PERSON_ID_LEAD = 10;
    static final long HOT_AUCTION_RATIO = 2, HOT_SELLER_RATIO = 4, HOT_BIDDER_RATIO = 4;
    static final long AVG_PERSON_BYTES = 200, AVG_AUCTION_BYTES = 500, AVG_BID_BYTES = 100;
    static final String[] FIRST_NAMES = {"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah",
            "Deiter", "Walter"};
    static final String[] LAST_NAMES = {"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
            "Noris"};
    static final String[] US_STATES = {"AZ", "CA", "ID", "OR", "WA", "WY"};
    static final String[] US_CITIES = {"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend",
            "Redmond", "Seattle", "Kent", "Cheyenne"};
    static final String[] CHANNELS = {"Google", "Facebook", "Baidu", "Apple"};

    static long mixState(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    static long mix(long x) {
        return mixState(x + 0x9e3779b97f4a7c15L);
    }

    static final class Rng {
        long s;
        Rng(long seed, long n) {
            s = mix(n ^ (seed * 0x9e3779b97f4a7c15L));
        }
        long next() {
            s += 0x9e3779b97f4a7c15L;
            return mixState(s);
        }
        long below(long bound) {
            return (next() >>> 1) % Math.max(bound, 1);
        }
        String string(long len) {
            StringBuilder b = new StringBuilder((int) len);
            long bits = 0;
            for (long i = 0; i < len; i++) {
                if (i % 4 == 0) bits = next();
                long v = ((bits & 0xffffL) * 338) >>> 16;
                bits >>>= 16;
                b.append(v < 26 ? ' ' : (char) ('a' + (v - 26) % 26));
            }
            return b.toString();
        }
        String extra(long current, long desired) {
            if (current >= desired) return "";
            long delta = desired - current;
            long len = delta * 8 / 10 + below(delta * 4 / 10 + 1);
            return string(len);
        }
        long price() {
            long lo = 100;
            for (long e = below(6); e > 0; e--) lo *= 10;
            return lo + below(9 * lo);
        }
    }

    static final class Config implements java.io.Serializable {
        final long events, eventRate, baseTimeMs, seed;
        Config(long events, long eventRate) {
            this.events = events;
            this.eventRate = eventRate;
            this.baseTimeMs = 1_700_000_000_000L;
            this.seed = 0;
        }
        long timestamp(long n) {
            return baseTimeMs + n * 1000 / Math.max(eventRate, 1);
        }
    }

    static long lastBase0PersonId(long n) {
        return n / PROPORTION_DENOMINATOR;
    }

    static long lastBase0AuctionId(long n) {
        long epoch = n / PROPORTION_DENOMINATOR, offset = n % PROPORTION_DENOMINATOR;
        if (offset < PERSON_PROPORTION) return Math.max(epoch * AUCTION_PROPORTION - 1, 0);
        return epoch * AUCTION_PROPORTION + Math.min(offset - PERSON_PROPORTION, AUCTION_PROPORTION - 1);
    }

    static long nextBase0PersonId(long n, Rng rng) {
        long people = lastBase0PersonId(n) + 1;
        long active = Math.min(people, NUM_ACTIVE_PEOPLE);
        return people - active + rng.below(active + PERSON_ID_LEAD);
    }

    static long nextBase0AuctionId(long n, Rng rng) {
        long max = lastBase0AuctionId(n);
        long min = Math.max(max - NUM_IN_FLIGHT_AUCTIONS, 0);
        return min + rng.below(max - min + 1 + AUCTION_ID_LEAD);
    }

    static Event event(Config c, long n) {
        Rng rng = new Rng(c.seed, n);
        long ts = c.timestamp(n);
        long offset = n % PROPORTION_DENOMINATOR;
        Event e = new Event();
        if (offset < PERSON_PROPORTION) {
            Person p = new Person();
            p.id = FIRST_PERSON_ID + lastBase0PersonId(n);
            String first = FIRST_NAMES[(int) rng.below(FIRST_NAMES.length)];
            p.name = first + " " + LAST_NAMES[(int) rng.below(LAST_NAMES.length)];
            String user = rng.string(7);
            p.emailAddress = user + "@" + rng.string(5) + ".com";
            long a = rng.below(10_000), b = rng.below(10_000), cc = rng.below(10_000), d = rng.below(10_000);
            p.creditCard = String.format("%04d %04d %04d %04d", a, b, cc, d);
            p.city = US_CITIES[(int) rng.below(US_CITIES.length)];
            p.state = US_STATES[(int) rng.below(US_STATES.length)];
            long size = 8 + p.name.length() + p.emailAddress.length() + p.creditCard.length() + p.city.length()
                    + p.state.length() + 8;
            p.extra = rng.extra(size, AVG_PERSON_BYTES);
            p.dateTime = ts;
            e.person = p;
        } else if (offset < PERSON_PROPORTION + AUCTION_PROPORTION) {
            Auction a = new Auction();
            a.id = FIRST_AUCTION_ID + lastBase0AuctionId(n);
            long seller = rng.below(HOT_SELLER_RATIO) > 0
                    ? lastBase0PersonId(n) / HOT_SELLER_RATIO * HOT_SELLER_RATIO
                    : nextBase0PersonId(n, rng);
            a.category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
            a.initialBid = rng.price();
            a.reserve = a.initialBid + rng.price();
            long horizonEvents = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
            long horizonMs = c.timestamp(n + horizonEvents) - ts;
            a.expires = ts + 1 + rng.below(Math.max(horizonMs, 1) * 2);
            a.itemName = rng.string(20);
            a.description = rng.string(100);
            long size = 8 + a.itemName.length() + a.description.length() + 48;
            a.extra = rng.extra(size, AVG_AUCTION_BYTES);
            a.dateTime = ts;
            a.seller = FIRST_PERSON_ID + seller;
            e.auction = a;
        } else {
            Bid b = new Bid();
            long auction = rng.below(HOT_AUCTION_RATIO) > 0
                    ? lastBase0AuctionId(n) / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
                    : nextBase0AuctionId(n, rng);
            long bidder = rng.below(HOT_BIDDER_RATIO) > 0
                    ? lastBase0PersonId(n) / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
                    : nextBase0PersonId(n, rng);
            b.price = rng.price();
            b.channel = CHANNELS[(int) rng.below(CHANNELS.length)];
            b.url = "https://www.nexmark.com/" + rng.string(5) + "/item.htm?query=1";
            long size = 24 + b.channel.length() + b.url.length() + 8;
            b.extra = rng.extra(size, AVG_BID_BYTES);
            b.auction = FIRST_AUCTION_ID + auction;
            b.bidder = FIRST_PERSON_ID + bidder;
            b.dateTime = ts;
            e.bid = b;
        }
        return e;
    }

    /**
     * Maps the generator source's index to an event number. DataGeneratorSource cuts 0..N into p
     * contiguous ranges, one per split; Cairn's source reads strided splits (split k makes k, k+p,
     * ...), so that all splits move through event time together. With N a multiple of p the
     * ranges are [k*N/p, (k+1)*N/p), and index i of range k becomes event (i - k*N/p) * p + k:
     * the same events, in the same per-split order as Cairn.
     */
    public static final class Gen implements GeneratorFunction<Long, Event> {
        final Config config;
        final long parallelism;
        Gen(Config config, long parallelism) {
            this.config = config;
            this.parallelism = parallelism;
        }
        @Override
        public Event map(Long i) {
            long per = config.events / parallelism;
            long k = i / per, within = i % per;
            return event(config, within * parallelism + k);
        }
    }

    // ------------------------------------------------------------- signatures

    static long fnv(String s) {
        long h = 0xcbf29ce484222325L;
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ (b & 0xff)) * 0x100000001b3L;
        }
        return h;
    }

    static long sig(long... fields) {
        long h = 0x243f6a8885a308d3L;
        for (long f : fields) h = mix(h ^ f);
        return h;
    }

    interface Signed {
        long signature();
    }

    static final AtomicLong RECORDS = new AtomicLong(), SUM = new AtomicLong();

    /** Counts and signs what it receives (all subtasks run in this JVM). */
    public static final class ChecksumSink<T extends Signed> implements Sink<T> {
        final boolean totals;
        ChecksumSink(boolean totals) {
            this.totals = totals;
        }
        @Override
        public SinkWriter<T> createWriter(WriterInitContext context) {
            return new SinkWriter<T>() {
                long records, sum;
                @Override
                public void write(T v, Context ctx) {
                    records++;
                    sum += totals ? ((BidderCount) v).totalSignature() : v.signature();
                }
                @Override
                public void flush(boolean endOfInput) {
                    RECORDS.addAndGet(records);
                    SUM.addAndGet(sum);
                    records = 0;
                    sum = 0;
                }
                @Override
                public void close() {
                    flush(true);
                }
            };
        }
    }

    public static final class SignedBid implements Signed {
        public Bid b;
        public SignedBid() {}
        SignedBid(Bid b) {
            this.b = b;
        }
        public long signature() {
            return sig(b.auction, b.bidder, b.price, b.dateTime, fnv(b.channel), fnv(b.url), fnv(b.extra));
        }
    }

    // ---------------------------------------------------------------- outputs

    public static class Q1Out implements Signed {
        public long auction, bidder, price, dateTime;
        public Q1Out() {}
        public long signature() {
            return sig(auction, bidder, price, dateTime);
        }
    }

    public static class Q2Out implements Signed {
        public long auction, price;
        public Q2Out() {}
        public long signature() {
            return sig(auction, price);
        }
    }

    public static class Q3Out implements Signed {
        public String name, city, state;
        public long auction;
        public Q3Out() {}
        public long signature() {
            return sig(fnv(name), fnv(city), fnv(state), auction);
        }
    }

    public static class Winner implements Signed {
        public long auction, category, seller, price, expires;
        public Winner() {}
        public long signature() {
            return sig(auction, category, seller, price, expires);
        }
    }

    public static class Q4Out implements Signed {
        public long category, averagePrice;
        public Q4Out() {}
        public long signature() {
            return sig(category, averagePrice);
        }
    }

    public static class AuctionCount implements Signed {
        public long windowEnd, auction, count;
        public AuctionCount() {}
        public long signature() {
            return sig(windowEnd, auction, count);
        }
    }

    public static class Q6Out implements Signed {
        public long seller, averagePrice;
        public Q6Out() {}
        public long signature() {
            return sig(seller, averagePrice);
        }
    }

    public static class RankedBid {
        public long auction, bidder, price, dateTime;
        public RankedBid() {}
        static RankedBid of(Bid b) {
            RankedBid r = new RankedBid();
            r.auction = b.auction;
            r.bidder = b.bidder;
            r.price = b.price;
            r.dateTime = b.dateTime;
            return r;
        }
        /** Higher price, then earlier, then lower auction id, then lower bidder id. */
        boolean beats(RankedBid o) {
            if (price != o.price) return price > o.price;
            if (dateTime != o.dateTime) return dateTime < o.dateTime;
            if (auction != o.auction) return auction < o.auction;
            return bidder < o.bidder;
        }
    }

    public static class Q7Out implements Signed {
        public long windowEnd;
        public RankedBid bid;
        public Q7Out() {}
        public long signature() {
            return sig(windowEnd, bid.auction, bid.bidder, bid.price, bid.dateTime);
        }
    }

    public static class Q8Out implements Signed {
        public long person, windowStart;
        public String name;
        public Q8Out() {}
        public long signature() {
            return sig(person, fnv(name), windowStart);
        }
    }

    public static class BidderCount implements Signed {
        public long bidder, count, start, end;
        public BidderCount() {}
        public long signature() {
            return sig(bidder, count, start, end);
        }
        long totalSignature() {
            return count * sig(bidder);
        }
    }

    // ---------------------------------------------------------------- queries

    static final long WINDOW_MS = 10_000, SLIDE_MS = 2_000, Q3_CATEGORY = 10;
    static final int Q6_LAST = 10;
    static final OutputTag<Person> PERSONS = new OutputTag<Person>("persons") {};
    static final OutputTag<Auction> AUCTIONS = new OutputTag<Auction>("auctions") {};

    public static final class SplitEvents extends ProcessFunction<Event, Bid> {
        @Override
        public void processElement(Event e, Context ctx, Collector<Bid> out) {
            if (e.bid != null) out.collect(e.bid);
            else if (e.person != null) ctx.output(PERSONS, e.person);
            else ctx.output(AUCTIONS, e.auction);
        }
    }

    static long windowStart(long ts) {
        return ts - Math.floorMod(ts, WINDOW_MS);
    }

    static boolean bidCounts(long auctionDateTime, long expires, long reserve, long dateTime, long price) {
        return dateTime >= auctionDateTime && dateTime < expires && price >= reserve;
    }

    public static class SellerInfo {
        public boolean local;
        public String name, city, state;
        public SellerInfo() {}
    }

    /** q3: people (input 1) joined with their category-10 auctions (input 2) as either arrives. */
    public static final class LocalItemJoin extends KeyedCoProcessFunction<Long, Person, Auction, Q3Out> {
        transient ValueState<SellerInfo> seller;
        transient ListState<Long> waiting;
        @Override
        public void open(OpenContext ctx) {
            seller = getRuntimeContext().getState(new ValueStateDescriptor<>("seller", TypeInformation.of(SellerInfo.class)));
            waiting = getRuntimeContext().getListState(new ListStateDescriptor<>("waiting-auctions", Types.LONG));
        }
        static Q3Out out(SellerInfo s, long auction) {
            Q3Out o = new Q3Out();
            o.name = s.name;
            o.city = s.city;
            o.state = s.state;
            o.auction = auction;
            return o;
        }
        @Override
        public void processElement1(Person p, Context ctx, Collector<Q3Out> out) throws Exception {
            SellerInfo info = new SellerInfo();
            info.local = p.state.equals("OR") || p.state.equals("ID") || p.state.equals("CA");
            info.name = info.local ? p.name : "";
            info.city = info.local ? p.city : "";
            info.state = info.local ? p.state : "";
            if (info.local) {
                Iterable<Long> w = waiting.get();
                if (w != null) for (Long a : w) out.collect(out(info, a));
            }
            waiting.clear();
            seller.update(info);
        }
        @Override
        public void processElement2(Auction a, Context ctx, Collector<Q3Out> out) throws Exception {
            SellerInfo info = seller.value();
            if (info == null) waiting.add(a.id);
            else if (info.local) out.collect(out(info, a.id));
        }
    }

    public static class OpenAuction {
        public long dateTime, expires, reserve, category, seller;
        public OpenAuction() {}
    }

    public static class EarlyBid {
        public long price, dateTime;
        public EarlyBid() {}
    }

    /** Auctions (input 1) with their bids (input 2): the highest valid bid when the auction closes. */
    public static final class WinningBids extends KeyedCoProcessFunction<Long, Auction, Bid, Winner> {
        transient ValueState<OpenAuction> auction;
        transient ValueState<Long> best;
        transient ListState<EarlyBid> early;
        @Override
        public void open(OpenContext ctx) {
            auction = getRuntimeContext().getState(new ValueStateDescriptor<>("auction", TypeInformation.of(OpenAuction.class)));
            best = getRuntimeContext().getState(new ValueStateDescriptor<>("best-price", Types.LONG));
            early = getRuntimeContext().getListState(new ListStateDescriptor<>("early-bids", TypeInformation.of(EarlyBid.class)));
        }
        @Override
        public void processElement1(Auction a, Context ctx, Collector<Winner> out) throws Exception {
            OpenAuction o = new OpenAuction();
            o.dateTime = a.dateTime;
            o.expires = a.expires;
            o.reserve = a.reserve;
            o.category = a.category;
            o.seller = a.seller;
            auction.update(o);
            ctx.timerService().registerEventTimeTimer(a.expires);
            Iterable<EarlyBid> waiting = early.get();
            if (waiting != null) {
                boolean any = false;
                long top = -1;
                for (EarlyBid b : waiting) {
                    any = true;
                    if (bidCounts(o.dateTime, o.expires, o.reserve, b.dateTime, b.price)) top = Math.max(top, b.price);
                }
                if (top >= 0) best.update(top);
                if (any) early.clear();
            }
        }
        @Override
        public void processElement2(Bid b, Context ctx, Collector<Winner> out) throws Exception {
            OpenAuction o = auction.value();
            if (o != null) {
                Long p = best.value();
                if (bidCounts(o.dateTime, o.expires, o.reserve, b.dateTime, b.price) && (p == null || b.price > p)) {
                    best.update(b.price);
                }
            } else {
                EarlyBid e = new EarlyBid();
                e.price = b.price;
                e.dateTime = b.dateTime;
                early.add(e);
                ctx.timerService().registerEventTimeTimer(b.dateTime);
            }
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<Winner> out) throws Exception {
            OpenAuction o = auction.value();
            if (o != null) {
                if (ts >= o.expires) {
                    Long p = best.value();
                    if (p != null) {
                        Winner w = new Winner();
                        w.auction = ctx.getCurrentKey();
                        w.category = o.category;
                        w.seller = o.seller;
                        w.price = p;
                        w.expires = o.expires;
                        out.collect(w);
                    }
                    auction.clear();
                    best.clear();
                    early.clear();
                }
            } else {
                List<EarlyBid> left = new ArrayList<>();
                Iterable<EarlyBid> waiting = early.get();
                if (waiting != null) for (EarlyBid b : waiting) if (b.dateTime > ts) left.add(b);
                early.update(left);
            }
        }
    }

    /** Winners of one key released in closing order (expiry, auction id) once event time passes them. */
    static List<Winner> releaseClosed(ListState<Winner> buffer, long ts) throws Exception {
        List<Winner> due = new ArrayList<>(), left = new ArrayList<>();
        Iterable<Winner> all = buffer.get();
        if (all != null) for (Winner w : all) (w.expires <= ts ? due : left).add(w);
        buffer.update(left);
        due.sort((a, b) -> a.expires != b.expires ? Long.compare(a.expires, b.expires) : Long.compare(a.auction, b.auction));
        return due;
    }

    public static final class CategoryAverage extends KeyedProcessFunction<Long, Winner, Q4Out> {
        transient ListState<Winner> buffer;
        transient ValueState<long[]> total;
        @Override
        public void open(OpenContext ctx) {
            buffer = getRuntimeContext().getListState(new ListStateDescriptor<>("closing", TypeInformation.of(Winner.class)));
            total = getRuntimeContext().getState(new ValueStateDescriptor<>("sum-and-count", TypeInformation.of(long[].class)));
        }
        @Override
        public void processElement(Winner w, Context ctx, Collector<Q4Out> out) throws Exception {
            ctx.timerService().registerEventTimeTimer(w.expires);
            buffer.add(w);
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<Q4Out> out) throws Exception {
            List<Winner> due = releaseClosed(buffer, ts);
            if (due.isEmpty()) return;
            long[] t = total.value();
            if (t == null) t = new long[2];
            for (Winner w : due) {
                t[0] += w.price;
                t[1] += 1;
                Q4Out o = new Q4Out();
                o.category = w.category;
                o.averagePrice = t[0] / t[1];
                out.collect(o);
            }
            total.update(t);
        }
    }

    public static final class SellerAverage extends KeyedProcessFunction<Long, Winner, Q6Out> {
        transient ListState<Winner> buffer;
        transient ValueState<long[]> last;
        @Override
        public void open(OpenContext ctx) {
            buffer = getRuntimeContext().getListState(new ListStateDescriptor<>("closing", TypeInformation.of(Winner.class)));
            last = getRuntimeContext().getState(new ValueStateDescriptor<>("last-prices", TypeInformation.of(long[].class)));
        }
        @Override
        public void processElement(Winner w, Context ctx, Collector<Q6Out> out) throws Exception {
            ctx.timerService().registerEventTimeTimer(w.expires);
            buffer.add(w);
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<Q6Out> out) throws Exception {
            List<Winner> due = releaseClosed(buffer, ts);
            if (due.isEmpty()) return;
            long[] prices = last.value();
            if (prices == null) prices = new long[0];
            for (Winner w : due) {
                if (prices.length == Q6_LAST) prices = Arrays.copyOfRange(prices, 1, prices.length);
                prices = Arrays.copyOf(prices, prices.length + 1);
                prices[prices.length - 1] = w.price;
                long sum = 0;
                for (long p : prices) sum += p;
                Q6Out o = new Q6Out();
                o.seller = w.seller;
                o.averagePrice = sum / prices.length;
                out.collect(o);
            }
            last.update(prices);
        }
    }

    public static final class Count<T> implements AggregateFunction<T, Long, Long> {
        public Long createAccumulator() {
            return 0L;
        }
        public Long add(T v, Long acc) {
            return acc + 1;
        }
        public Long getResult(Long acc) {
            return acc;
        }
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    public static final class AuctionCountOf extends ProcessWindowFunction<Long, AuctionCount, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts, Collector<AuctionCount> out) {
            for (Long n : counts) {
                AuctionCount c = new AuctionCount();
                c.windowEnd = ctx.window().getEnd();
                c.auction = auction;
                c.count = n;
                out.collect(c);
            }
        }
    }

    public static class Top {
        public long count;
        public long[] auctions;
        public Top() {}
    }

    public static final class HottestAuctions extends KeyedProcessFunction<Long, AuctionCount, AuctionCount> {
        transient ValueState<Top> top;
        @Override
        public void open(OpenContext ctx) {
            top = getRuntimeContext().getState(new ValueStateDescriptor<>("top", TypeInformation.of(Top.class)));
        }
        @Override
        public void processElement(AuctionCount c, Context ctx, Collector<AuctionCount> out) throws Exception {
            Top t = top.value();
            long max = t == null ? 0 : t.count;
            if (c.count > max) {
                Top n = new Top();
                n.count = c.count;
                n.auctions = new long[] {c.auction};
                top.update(n);
                ctx.timerService().registerEventTimeTimer(c.windowEnd - 1);
            } else if (c.count == max) {
                t.auctions = Arrays.copyOf(t.auctions, t.auctions.length + 1);
                t.auctions[t.auctions.length - 1] = c.auction;
                top.update(t);
            }
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<AuctionCount> out) throws Exception {
            Top t = top.value();
            if (t == null) return;
            long[] auctions = t.auctions.clone();
            Arrays.sort(auctions);
            for (long a : auctions) {
                AuctionCount c = new AuctionCount();
                c.windowEnd = ctx.getCurrentKey();
                c.auction = a;
                c.count = t.count;
                out.collect(c);
            }
            top.clear();
        }
    }

    /** The best bid so far; price -1 while the window has none. */
    public static final class MaxBid implements AggregateFunction<Bid, RankedBid, RankedBid> {
        public RankedBid createAccumulator() {
            RankedBid none = new RankedBid();
            none.price = -1;
            return none;
        }
        public RankedBid add(Bid b, RankedBid acc) {
            RankedBid r = RankedBid.of(b);
            return acc.price < 0 || r.beats(acc) ? r : acc;
        }
        public RankedBid getResult(RankedBid acc) {
            return acc;
        }
        public RankedBid merge(RankedBid a, RankedBid b) {
            if (a.price < 0) return b;
            if (b.price < 0) return a;
            return b.beats(a) ? b : a;
        }
    }

    public static final class BestOfWindow extends ProcessWindowFunction<RankedBid, Q7Out, Long, TimeWindow> {
        @Override
        public void process(Long key, Context ctx, Iterable<RankedBid> best, Collector<Q7Out> out) {
            for (RankedBid b : best) {
                if (b.price < 0) continue;
                Q7Out o = new Q7Out();
                o.windowEnd = ctx.window().getEnd();
                o.bid = b;
                out.collect(o);
            }
        }
    }

    public static final class HighestOfWindow extends KeyedProcessFunction<Long, Q7Out, Q7Out> {
        transient ValueState<RankedBid> best;
        @Override
        public void open(OpenContext ctx) {
            best = getRuntimeContext().getState(new ValueStateDescriptor<>("best", TypeInformation.of(RankedBid.class)));
        }
        @Override
        public void processElement(Q7Out c, Context ctx, Collector<Q7Out> out) throws Exception {
            RankedBid b = best.value();
            if (b == null) {
                best.update(c.bid);
                ctx.timerService().registerEventTimeTimer(c.windowEnd - 1);
            } else if (c.bid.beats(b)) {
                best.update(c.bid);
            }
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<Q7Out> out) throws Exception {
            RankedBid b = best.value();
            if (b == null) return;
            Q7Out o = new Q7Out();
            o.windowEnd = ctx.getCurrentKey();
            o.bid = b;
            out.collect(o);
            best.clear();
        }
    }

    public static class NewPerson {
        public String name;
        public long windowStart;
        public boolean reported;
        public NewPerson() {}
    }

    /** q8: people (input 1) and auctions by seller (input 2) within 10 s tumbling windows. */
    public static final class NewSellerJoin extends KeyedCoProcessFunction<Long, Person, Auction, Q8Out> {
        transient ValueState<NewPerson> person;
        transient ValueState<long[]> auctionWindows;
        @Override
        public void open(OpenContext ctx) {
            person = getRuntimeContext().getState(new ValueStateDescriptor<>("person", TypeInformation.of(NewPerson.class)));
            auctionWindows = getRuntimeContext().getState(new ValueStateDescriptor<>("auction-windows", TypeInformation.of(long[].class)));
        }
        static boolean contains(long[] a, long v) {
            if (a != null) for (long x : a) if (x == v) return true;
            return false;
        }
        @Override
        public void processElement1(Person p, Context ctx, Collector<Q8Out> out) throws Exception {
            long ws = windowStart(p.dateTime);
            boolean reported = contains(auctionWindows.value(), ws);
            if (reported) {
                Q8Out o = new Q8Out();
                o.person = p.id;
                o.name = p.name;
                o.windowStart = ws;
                out.collect(o);
            }
            auctionWindows.clear();
            NewPerson n = new NewPerson();
            n.name = p.name;
            n.windowStart = ws;
            n.reported = reported;
            person.update(n);
            ctx.timerService().registerEventTimeTimer(ws + WINDOW_MS - 1);
        }
        @Override
        public void processElement2(Auction a, Context ctx, Collector<Q8Out> out) throws Exception {
            long ws = windowStart(a.dateTime);
            NewPerson p = person.value();
            if (p != null) {
                if (p.windowStart == ws && !p.reported) {
                    Q8Out o = new Q8Out();
                    o.person = a.seller;
                    o.name = p.name;
                    o.windowStart = ws;
                    out.collect(o);
                    p.reported = true;
                    person.update(p);
                }
            } else {
                long[] seen = auctionWindows.value();
                if (!contains(seen, ws)) {
                    long[] next = seen == null ? new long[1] : Arrays.copyOf(seen, seen.length + 1);
                    next[next.length - 1] = ws;
                    auctionWindows.update(next);
                    ctx.timerService().registerEventTimeTimer(ws + WINDOW_MS - 1);
                }
            }
        }
        @Override
        public void onTimer(long ts, OnTimerContext ctx, Collector<Q8Out> out) throws Exception {
            NewPerson p = person.value();
            if (p != null && p.windowStart + WINDOW_MS - 1 <= ts) person.clear();
            long[] seen = auctionWindows.value();
            if (seen != null) {
                long[] left = Arrays.stream(seen).filter(w -> w + WINDOW_MS - 1 > ts).toArray();
                if (left.length == 0) auctionWindows.clear();
                else auctionWindows.update(left);
            }
        }
    }

    public static final class BidderCountOf extends ProcessWindowFunction<Long, BidderCount, Long, TimeWindow> {
        @Override
        public void process(Long bidder, Context ctx, Iterable<Long> counts, Collector<BidderCount> out) {
            for (Long n : counts) {
                BidderCount c = new BidderCount();
                c.bidder = bidder;
                c.count = n;
                c.start = ctx.window().getStart();
                c.end = ctx.window().getEnd();
                out.collect(c);
            }
        }
    }

    static <T extends Signed> void sign(DataStream<T> s, boolean totals) {
        s.sinkTo(new ChecksumSink<T>(totals)).uid("sink").name("checksum sink");
    }

    static void buildQuery(StreamExecutionEnvironment env, String q, Config config, int parallelism) {
        DataGeneratorSource<Event> src = new DataGeneratorSource<>(new Gen(config, parallelism), config.events,
                RateLimiterStrategy.noOp(), TypeInformation.of(Event.class));
        DataStream<Event> events = env.fromSource(src,
                        WatermarkStrategy.<Event>forMonotonousTimestamps().withTimestampAssigner((e, t) -> e.dateTime()),
                        "Nexmark source")
                .uid("nexmark-source");
        SingleOutputStreamOperator<Bid> bids = events.process(new SplitEvents(), TypeInformation.of(Bid.class))
                .uid("nexmark-split").name("Split events");
        DataStream<Person> persons = bids.getSideOutput(PERSONS);
        DataStream<Auction> auctions = bids.getSideOutput(AUCTIONS);
        KeySelector<Bid, Long> byAuction = b -> b.auction;
        KeySelector<Bid, Long> byBidder = b -> b.bidder;
        switch (q) {
            case "q0":
                sign(bids.map((MapFunction<Bid, SignedBid>) SignedBid::new, TypeInformation.of(SignedBid.class))
                        .name("q0: pass through"), false);
                break;
            case "q1":
                sign(bids.map((MapFunction<Bid, Q1Out>) b -> {
                    Q1Out o = new Q1Out();
                    o.auction = b.auction;
                    o.bidder = b.bidder;
                    o.price = b.price * 908 / 1000;
                    o.dateTime = b.dateTime;
                    return o;
                }, TypeInformation.of(Q1Out.class)).name("q1: to euros"), false);
                break;
            case "q2":
                sign(bids.filter((FilterFunction<Bid>) b -> b.auction % 123 == 0).name("q2: select auctions")
                        .map((MapFunction<Bid, Q2Out>) b -> {
                            Q2Out o = new Q2Out();
                            o.auction = b.auction;
                            o.price = b.price;
                            return o;
                        }, TypeInformation.of(Q2Out.class)).name("q2: project"), false);
                break;
            case "q3":
                sign(persons.keyBy((KeySelector<Person, Long>) p -> p.id, Types.LONG)
                        .connect(auctions.filter((FilterFunction<Auction>) a -> a.category == Q3_CATEGORY)
                                .name("q3: category")
                                .keyBy((KeySelector<Auction, Long>) a -> a.seller, Types.LONG))
                        .process(new LocalItemJoin(), TypeInformation.of(Q3Out.class))
                        .uid("q3-join").name("q3: join sellers"), false);
                break;
            case "q4":
            case "q6": {
                DataStream<Winner> winners = auctions.keyBy((KeySelector<Auction, Long>) a -> a.id, Types.LONG)
                        .connect(bids.keyBy(byAuction, Types.LONG))
                        .process(new WinningBids(), TypeInformation.of(Winner.class))
                        .uid("winning-bids").name("winning bids");
                if (q.equals("q4")) {
                    sign(winners.keyBy((KeySelector<Winner, Long>) w -> w.category, Types.LONG)
                            .process(new CategoryAverage(), TypeInformation.of(Q4Out.class))
                            .uid("q4-average").name("q4: average per category"), false);
                } else {
                    sign(winners.keyBy((KeySelector<Winner, Long>) w -> w.seller, Types.LONG)
                            .process(new SellerAverage(), TypeInformation.of(Q6Out.class))
                            .uid("q6-average").name("q6: average per seller"), false);
                }
                break;
            }
            case "q5":
                sign(bids.keyBy(byAuction, Types.LONG)
                        .window(SlidingEventTimeWindows.of(Duration.ofMillis(WINDOW_MS), Duration.ofMillis(SLIDE_MS)))
                        .aggregate(new Count<Bid>(), new AuctionCountOf(), Types.LONG, Types.LONG,
                                TypeInformation.of(AuctionCount.class))
                        .uid("q5-count").name("q5: bids per auction and window")
                        .keyBy((KeySelector<AuctionCount, Long>) c -> c.windowEnd, Types.LONG)
                        .process(new HottestAuctions(), TypeInformation.of(AuctionCount.class))
                        .uid("q5-top").name("q5: hottest auctions"), false);
                break;
            case "q7":
                sign(bids.keyBy(byAuction, Types.LONG)
                        .window(TumblingEventTimeWindows.of(Duration.ofMillis(WINDOW_MS)))
                        .aggregate(new MaxBid(), new BestOfWindow(), TypeInformation.of(RankedBid.class),
                                TypeInformation.of(RankedBid.class), TypeInformation.of(Q7Out.class))
                        .uid("q7-per-auction").name("q7: highest bid per auction and window")
                        .keyBy((KeySelector<Q7Out, Long>) c -> c.windowEnd, Types.LONG)
                        .process(new HighestOfWindow(), TypeInformation.of(Q7Out.class))
                        .uid("q7-per-window").name("q7: highest bid per window"), false);
                break;
            case "q8":
                sign(persons.keyBy((KeySelector<Person, Long>) p -> p.id, Types.LONG)
                        .connect(auctions.keyBy((KeySelector<Auction, Long>) a -> a.seller, Types.LONG))
                        .process(new NewSellerJoin(), TypeInformation.of(Q8Out.class))
                        .uid("q8-join").name("q8: join new sellers"), false);
                break;
            case "q11":
                sign(bids.keyBy(byBidder, Types.LONG)
                        .window(EventTimeSessionWindows.withGap(Duration.ofMillis(WINDOW_MS)))
                        .aggregate(new Count<Bid>(), new BidderCountOf(), Types.LONG, Types.LONG,
                                TypeInformation.of(BidderCount.class))
                        .uid("q11-sessions").name("q11: bids per session"), false);
                break;
            case "q12":
                sign(bids.keyBy(byBidder, Types.LONG)
                        .window(TumblingProcessingTimeWindows.of(Duration.ofMillis(WINDOW_MS)))
                        .aggregate(new Count<Bid>(), new BidderCountOf(), Types.LONG, Types.LONG,
                                TypeInformation.of(BidderCount.class))
                        .uid("q12-windows").name("q12: bids per processing-time window"), true);
                break;
            default:
                throw new IllegalArgumentException("unknown query " + q + "; pick one of q0..q8, q11, q12");
        }
    }

    static Map<String, String> parseArgs(String[] args) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) throw new IllegalArgumentException("bad argument " + args[i]);
            m.put(args[i].substring(2), args[i + 1]);
        }
        return m;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = parseArgs(argv);
        String q = a.getOrDefault("query", "q0");
        long events = Long.parseLong(a.getOrDefault("events", "10000000"));
        long rate = Long.parseLong(a.getOrDefault("event-rate", "10000"));
        int par = Integer.parseInt(a.getOrDefault("parallelism", "2"));
        long intervalMs = Long.parseLong(a.getOrDefault("interval-ms", "1000"));
        String ckptDir = a.getOrDefault("ckpt-dir", "/tmp/nexmark-flink-ckpt");
        if (events % par != 0) throw new IllegalArgumentException("--events must be a multiple of --parallelism");
        Config config = new Config(events, rate);

        Configuration conf = new Configuration();
        conf.set(CoreOptions.DEFAULT_PARALLELISM, par);
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        if (intervalMs > 0) {
            conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
            conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, new File(ckptDir).toURI().toString());
            conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofMillis(intervalMs));
            conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
            conf.set(CheckpointingOptions.ENABLE_UNALIGNED, false);
            conf.set(CheckpointingOptions.MAX_CONCURRENT_CHECKPOINTS, 1);
        }
        Configuration clusterConf = new Configuration(conf);
        clusterConf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
        clusterConf.set(RestOptions.ADDRESS, "127.0.0.1");
        clusterConf.set(RestOptions.BIND_PORT, "0");
        clusterConf.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse("256m"));
        clusterConf.set(TaskManagerOptions.NUM_TASK_SLOTS, par);
        MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                .setConfiguration(clusterConf).setNumTaskManagers(1).setNumSlotsPerTaskManager(par)
                .setCommonBindAddress("127.0.0.1").build();

        StreamExecutionEnvironment env = new StreamExecutionEnvironment(conf);
        buildQuery(env, q, config, par);
        StreamGraph sg = env.getStreamGraph();
        sg.setJobName("nexmark-" + q);
        JobGraph jg = sg.getJobGraph(NexmarkBench.class.getClassLoader(), null);
        try (MiniCluster mc = new MiniCluster(mcc)) {
            mc.start();
            long t0 = System.nanoTime();
            JobID id = mc.submitJob(jg).get().getJobID();
            JobResult res = mc.requestJobResult(id).get();
            double secs = (System.nanoTime() - t0) / 1e9;
            if (!res.isSuccess()) {
                res.getSerializedThrowable().ifPresent(t -> t.printStackTrace());
                throw new RuntimeException("job failed: " + res.getJobStatus());
            }
            ArchivedExecutionGraph g = mc.getArchivedExecutionGraph(id).get();
            CheckpointStatsSnapshot st = g.getCheckpointStatsSnapshot();
            long completed = st == null ? 0 : st.getCounts().getNumberOfCompletedCheckpoints();
            System.out.printf("engine=flink-2.3.0 query=%s events=%d parallelism=%d event_rate=%d seconds=%.3f "
                            + "events_per_s=%.0f results=%d checksum=%016x checkpoints=%d%n",
                    q, events, par, rate, secs, events / secs, RECORDS.get(), SUM.get(), completed);
        }
    }
}
